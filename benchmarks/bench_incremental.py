"""Peak memory of an incremental run over a state of N keys, against a plain run as baseline.

    .venv/bin/python benchmarks/bench_incremental.py [--keys 1000000]

Both runs list the same N synthetic keys (no I/O for the listing) and dispatch to a sink; the
incremental one first has a state file of N entries, half of them unchanged. The figure that
matters is the ratio: incremental mode should not hold the state in memory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import resource, sys, time
from collections.abc import Iterator
from hopper import RunConfig
from hopper.items import Item, Page
from hopper.runstate.run import run_with_state
from hopper.target import InvokeResult

n, incremental, state = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3]

class Synthetic:
    bucket = "synthetic"
    mode = "objects"
    key_root = "s3://synthetic/"
    def describe(self): return "synthetic"
    def pages(self, start_after=None):
        for start in range(0, n, 1000):
            yield Page(tuple(Item(f"key/{i:09}", size=1, etag=("same" if i % 2 else "new")) for i in range(start, min(start + 1000, n))))

class Sink:
    name = "sink"; repeat_safe = True
    def prepare(self): pass
    def close(self): pass
    def invoke(self, payload): return InvokeResult(ok=True)

config = RunConfig(source="s3://synthetic", target="fn", state=state, incremental=incremental, batch_size=100, concurrency=4)
started = time.perf_counter()
summary = run_with_state(config, source=Synthetic(), target=Sink())
elapsed = time.perf_counter() - started
print(f"0 {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss} {elapsed:.2f} {summary.counts.dispatched} {summary.counts.unchanged}")
"""


def measure(keys: int, incremental: bool, state: Path) -> tuple[int, int, float, int, int]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(keys), "1" if incremental else "0", str(state)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    peak, rss, elapsed, dispatched, unchanged = done.stdout.split()
    return int(peak), int(rss), float(elapsed), int(dispatched), int(unchanged)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        plain_state = Path(tmp) / "plain"
        inc_state = Path(tmp) / "incremental"
        inc_state.mkdir()
        started = time.perf_counter()
        with (inc_state / "incremental.jsonl").open("w") as out:
            for i in range(args.keys):
                out.write(json.dumps({"k": f"key/{i:09}", "e": "same" if i % 2 else "old"}) + "\n")
        print(f"state of {args.keys} keys written in {time.perf_counter() - started:.1f}s")
        base = measure(args.keys, False, plain_state)
        inc = measure(args.keys, True, inc_state)
    print(
        f"plain run        max RSS {base[1] / 1024:7.1f} MiB  {base[2]:6.1f}s  dispatched {base[3]}"
    )
    print(
        f"incremental run  max RSS {inc[1] / 1024:7.1f} MiB  {inc[2]:6.1f}s  "
        f"dispatched {inc[3]}, unchanged {inc[4]}"
    )
    print(f"ratio incremental/plain max RSS: {inc[1] / base[1]:.2f}")


if __name__ == "__main__":
    main()
