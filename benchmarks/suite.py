"""hopper's benchmark suite: every figure a ratio to a baseline measured in the same run.

    make bench                      # runs everything, rewrites BENCHMARKS.md
    .venv/bin/python benchmarks/suite.py [--only P1,P3] [--write]

Lambda and S3 are stood in for by benchmarks/stubs/aws_stub.js (Node.js, loopback): Invoke
answers 202 after a set latency, ListObjectsV2 serves a synthetic sorted key space after a set
page latency. The stubs' own ceiling is measured first (benchmarks/stubs/hammer.js), to show
they are not what limits the figures. Both share this machine's cores with hopper, as any
loopback benchmark does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
STUB = HERE / "stubs" / "aws_stub.js"
HAMMER = HERE / "stubs" / "hammer.js"
BUCKET = "bucket"
FUNCTION = "stub"


@dataclass
class Row:
    key: str
    what: str
    measured: str
    baseline: str
    ratio: float | None
    target: str
    met: bool | None
    notes: list[str] = field(default_factory=list)


ROWS: list[Row] = []
EXTRA: list[str] = []


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ stubs


@contextlib.contextmanager
def stub(**options: Any) -> Iterator[str]:
    """Start the Node.js stub; yield its endpoint with the AWS environment pointed at it."""
    node = shutil.which("node")
    if node is None:
        raise SystemExit("make bench needs node on PATH for the AWS stubs")
    args = [node, str(STUB)]
    for name, value in options.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        endpoint = f"http://127.0.0.1:{process.stdout.readline().strip()}"
        saved = dict(os.environ)
        os.environ.update(
            AWS_ENDPOINT_URL=endpoint,
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
            AWS_CONFIG_FILE="/nonexistent",
        )
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "AWS_PROFILE"):
            os.environ.pop(name, None)
        try:
            yield endpoint
        finally:
            os.environ.clear()
            os.environ.update(saved)
    finally:
        process.terminate()
        process.wait()


def stats(endpoint: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{endpoint}/stats", timeout=10) as answer:
        return dict(json.loads(answer.read()))


def reset(endpoint: str) -> None:
    request = urllib.request.Request(f"{endpoint}/reset", method="POST")
    urllib.request.urlopen(request, timeout=10).read()


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def boto3_client(service: str, pool: int = 10) -> Any:
    import boto3
    import botocore.config

    config = botocore.config.Config(
        retries={"mode": "standard", "total_max_attempts": 1}, max_pool_connections=pool
    )
    return boto3.session.Session().client(service, config=config)


# ------------------------------------------------------------------------------- the stubs


def stub_ceiling() -> None:
    say("stub ceiling ...")
    node = shutil.which("node") or "node"
    with stub(keys=100_000) as endpoint:
        invoke = subprocess.run(
            [node, str(HAMMER), f"{endpoint}/2015-03-31/functions/{FUNCTION}/invocations",
             "POST", "64", "3"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        pages = subprocess.run(
            [node, str(HAMMER), f"{endpoint}/{BUCKET}?list-type=2&encoding-type=url", "GET", "8",
             "3"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    EXTRA.append(
        f"- Stub ceiling, measured with `benchmarks/stubs/hammer.js` (Node.js, keep-alive, no "
        f"latency): Invoke **{int(invoke):,} requests/s** at 64 in flight; ListObjectsV2 "
        f"**{int(pages):,} pages/s** ({int(pages) * 1000:,} keys/s) at 8 in flight. Every "
        "figure below is well under these."
    )


# ------------------------------------------------------------------------------- P1 and P2


def p1_p2(items: int, latency_ms: int) -> None:
    from hopper import RunConfig, run

    say("P1/P2: invokes ...")
    with stub(keys=items, invoke_ms=latency_ms) as endpoint:
        client = boto3_client("lambda")
        seed_n = 200
        started = time.perf_counter()
        for i in range(seed_n):
            client.invoke(
                FunctionName=FUNCTION,
                InvocationType="Event",
                Payload=json.dumps({"dataset_prefix": f"k{i}"}),
            )
        seed = seed_n / (time.perf_counter() - started)

        pooled_client = boto3_client("lambda", pool=64)
        pool_n = 3000

        def one(i: int) -> None:
            pooled_client.invoke(
                FunctionName=FUNCTION,
                InvocationType="Event",
                Payload=json.dumps({"dataset_prefix": f"k{i}"}),
            )

        started = time.perf_counter()
        with ThreadPoolExecutor(64) as pool:
            list(pool.map(one, range(pool_n)))
        pooled = pool_n / (time.perf_counter() - started)

        reset(endpoint)
        config = RunConfig(source=f"s3://{BUCKET}", target=f"lambda:{FUNCTION}", concurrency=64)
        began_cpu = cpu()
        started = time.perf_counter()
        summary = run(config)
        seconds = time.perf_counter() - started
        used = cpu() - began_cpu
        assert summary.status == "succeeded", summary.to_dict()
        assert summary.counts.dispatched == items == stats(endpoint)["invokes"]
        hopper = items / seconds
        per_invoke_us = used / items * 1e6

        boto3_n = 3000
        boto3_run = run(
            RunConfig(
                source=f"s3://{BUCKET}",
                target=f"lambda:{FUNCTION}",
                concurrency=64,
                transport="boto3",
                limit=boto3_n,
            )
        )
        assert boto3_run.counts.dispatched == boto3_n
        hopper_boto3 = boto3_n / boto3_run.duration_s

    ROWS.append(
        Row(
            "P1",
            f"one-item Event invokes/s at {latency_ms} ms latency ({items:,} items, "
            "`hopper.run`, concurrency 64)",
            f"{hopper:,.0f}/s",
            f"seed loop {seed:,.0f}/s",
            hopper / seed,
            "≥ 50x",
            hopper / seed >= 50,
        )
    )
    ROWS.append(
        Row(
            "P1",
            "the same, against boto3 in ThreadPool(64)",
            f"{hopper:,.0f}/s",
            f"ThreadPool(64) {pooled:,.0f}/s",
            hopper / pooled,
            "≥ 5x",
            hopper / pooled >= 5,
            [f"hopper with `--transport boto3`: {hopper_boto3:,.0f}/s"],
        )
    )
    ROWS.append(
        Row(
            "P2",
            "CPU per dispatched invoke (user + system, whole process: listing, batching, "
            "signing, sending)",
            f"{per_invoke_us:.0f} µs",
            "",
            None,
            "≤ 300 µs",
            per_invoke_us <= 300,
        )
    )


def p1_faults(items: int, latency_ms: int, rate: float) -> None:
    from hopper import RunConfig, run

    say("P1 with faults ...")
    with stub(keys=items, invoke_ms=latency_ms, fault_rate=rate) as endpoint:
        summary = run(
            RunConfig(source=f"s3://{BUCKET}", target=f"lambda:{FUNCTION}", concurrency=64)
        )
        seen = stats(endpoint)
    assert summary.counts.dispatched == items, summary.to_dict()
    assert seen["invokes"] - seen["faults"] == items
    EXTRA.append(
        f"- With {rate:.0%} of invokes answered 429 TooManyRequestsException: every one of "
        f"{items:,} items dispatched at {items / summary.duration_s:,.0f}/s, after "
        f"{seen['faults']:,} retried throttles."
    )


# ------------------------------------------------------------------------------- P3 and P4


def _hopper_keys(parallelism: int, transport: str = "fast") -> int:
    from hopper.sources import S3Source

    source = S3Source(BUCKET, transport_name=transport, parallelism=parallelism)
    return sum(len(page.items) for page in source.pages())


def _paginator_keys() -> int:
    client = boto3_client("s3")
    count = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        count += len(page.get("Contents", ()))
    return count


def timed(call: Callable[[], int]) -> tuple[int, float]:
    started = time.perf_counter()
    count = call()
    return count, time.perf_counter() - started


def p3(keys: int) -> None:
    say("P3: listing ...")
    with stub(keys=keys):
        base_count, base = timed(_paginator_keys)
        fast_count, fast = timed(lambda: _hopper_keys(1))
        parallel_count, parallel = timed(lambda: _hopper_keys(16))
    assert base_count == fast_count == parallel_count == keys
    ROWS.append(
        Row(
            "P3",
            f"keys/s listing {keys:,} keys, one page after another (no page latency)",
            f"{keys / fast:,.0f}/s",
            f"boto3 paginator {keys / base:,.0f}/s",
            base / fast,
            "≥ 10x",
            base / fast >= 10,
            [f"with partitioned listing (16): {keys / parallel:,.0f}/s"],
        )
    )


def p4(keys: int, page_ms: int) -> None:
    say("P4: partitioned listing ...")
    with stub(keys=keys, page_ms=page_ms) as endpoint:
        base_count, base = timed(_paginator_keys)
        reset(endpoint)
        count, parallel = timed(lambda: _hopper_keys(16))
        requests = stats(endpoint)["lists"]
    assert base_count == count == keys
    ROWS.append(
        Row(
            "P4",
            f"{keys:,} keys at {page_ms} ms per page, partitioned parallel listing (16)",
            f"{parallel:.2f} s",
            f"sequential paginator {base:.2f} s",
            base / parallel,
            "≥ 8x",
            base / parallel >= 8,
            [f"{requests} list requests for {keys // 1000} pages of keys"],
        )
    )


# ---------------------------------------------------------------------------------------- P8

PAGINATOR_PROCESS = """
import boto3, botocore.config
s3 = boto3.client("s3", config=botocore.config.Config(retries={"mode": "standard"}))
count = 0
for page in s3.get_paginator("list_objects_v2").paginate(Bucket="bucket"):
    count += len(page.get("Contents", ()))
print(count)
"""


def _process_seconds(args: list[str]) -> tuple[str, float]:
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, check=True, env=dict(os.environ))
    return done.stdout, time.perf_counter() - started


def p8(keys: int, page_ms: int, target: float) -> None:
    """What a user sees: `hopper plan` as a whole process, start-up included, against a
    process that lists the same keys with boto3's paginator. Best of two each."""
    say(f"P8: hopper plan as a process, {keys:,} keys at {page_ms} ms per page ...")
    hopper = str(Path(sys.executable).with_name("hopper"))
    with stub(keys=keys, page_ms=page_ms):
        base = min(_process_seconds([sys.executable, "-c", PAGINATOR_PROCESS]) for _ in range(2))
        mine = min(_process_seconds([hopper, "plan", f"s3://{BUCKET}", "--json"]) for _ in range(2))
    assert int(base[0]) == keys and json.loads(mine[0])["selected"] == keys
    ratio = base[1] / mine[1]
    ROWS.append(
        Row(
            "P8",
            f"`hopper plan s3://bucket --json` as a process, {keys:,} keys, {page_ms} ms per page"
            " (start-up, listing, selecting, batching and sizing every event)",
            f"{mine[1]:.2f} s",
            f"boto3 paginator process {base[1]:.2f} s",
            ratio,
            f"≥ {target:g}x",
            ratio >= target,
        )
    )


# ---------------------------------------------------------------------------------------- P9


def p9(rows: int) -> None:
    """An S3 Inventory report read, sorted and planned (benchmarks/bench_inventory.py)."""
    import bench_inventory

    say(f"P9: inventory report of {rows:,} rows ...")
    csv_result = bench_inventory.measure(rows, 8, "CSV")
    rate = csv_result["rows_per_s"]
    peak = csv_result["peak_kb"] / 1024
    ROWS.append(
        Row(
            "P9",
            f"`hopper plan inventory:…` over a {rows:,}-row CSV report in 8 gzipped files, "
            "rows in no order: read, checked, sorted (external merge), planned",
            f"{rate:,.0f} rows/s, peak {peak:.0f} MB",
            f"gzip + csv alone {csv_result['floor_rows_per_s']:,.0f} rows/s",
            rate / csv_result["floor_rows_per_s"],
            "≥ 300,000 rows/s, ≤ 256 MB",
            rate >= 300_000 and peak <= 256,
            [f"took {csv_result['seconds']:.1f} s"],
        )
    )
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        EXTRA.append("- P9 Parquet: pyarrow is not installed (`pip install 'hopper[inventory]'`).")
        return
    parquet = bench_inventory.measure(rows, 8, "Parquet")
    EXTRA.append(
        f"- P9 with the same report as Parquet (pyarrow): {parquet['rows_per_s']:,.0f} rows/s, "
        f"peak {parquet['peak_kb'] / 1024:.0f} MB, {parquet['seconds']:.1f} s."
    )


# ---------------------------------------------------------------------------------------- P5


def p5(items: int) -> None:
    say("P5: peak memory ...")
    with stub(keys=items, invoke_ms=20) as endpoint:
        child = subprocess.run(
            [sys.executable, str(Path(__file__)), "--p5-child", str(items)],
            capture_output=True, text=True, check=True, env=dict(os.environ),
        )  # fmt: skip
        invokes = stats(endpoint)["invokes"]
    result = json.loads(child.stdout)
    bare = subprocess.run(
        [sys.executable, "-c", "import boto3, sys; sys.path.insert(0, sys.argv[1]); import suite; "
         "boto3.client('s3', region_name='us-east-1'); print(suite.peak_kb())", str(HERE)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert result["dispatched"] == items and invokes == items // 100
    peak = result["maxrss_kb"] / 1024
    ROWS.append(
        Row(
            "P5",
            f"peak RSS, {items:,} items listed, batched (100) and dispatched to the stub",
            f"{peak:.0f} MB",
            f"python + boto3 client {int(bare.stdout) / 1024:.0f} MB",
            None,
            "≤ 128 MB",
            peak <= 128,
            [f"took {result['seconds']:.1f} s"],
        )
    )


def peak_kb() -> int:
    """This process's peak resident set. Not ru_maxrss: Linux carries that over from the
    parent across fork and exec, so a child of this (large) suite would report the suite."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def p5_child(items: int) -> None:
    from hopper import RunConfig, run

    summary = run(
        RunConfig(
            source=f"s3://{BUCKET}", target=f"lambda:{FUNCTION}", batch_size=100, concurrency=64
        )
    )
    print(
        json.dumps(
            {
                "dispatched": summary.counts.dispatched,
                "seconds": summary.duration_s,
                "maxrss_kb": peak_kb(),
            }
        )
    )


# ---------------------------------------------------------------------------------------- P6


def trivial(x: int) -> int:
    return x


def p6(tasks: int) -> None:
    from hopper import RunConfig, run

    say("P6: local mode ...")
    workers = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "data"
        folder.mkdir()
        for i in range(tasks):
            (folder / f"task-{i:06}").touch()
        worker = Path(tmp) / "worker.py"
        worker.write_text("def handler(event, context):\n    return 1\n")

        started = time.perf_counter()
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(trivial, range(tasks), chunksize=1))
        per_task = time.perf_counter() - started

        chunk = max(1, tasks // (4 * workers))
        started = time.perf_counter()
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(trivial, range(tasks), chunksize=chunk))
        chunked = time.perf_counter() - started

        runs = []
        for _ in range(3):
            summary = run(RunConfig(source=str(folder), target=f"{worker}:handler"))
            assert summary.counts.dispatched == tasks, summary.to_dict()
            runs.append(summary.duration_s)
        hopper = statistics.median(runs)
    ROWS.append(
        Row(
            "P6",
            f"local mode, {tasks:,} trivial tasks (files of a folder), `hopper.run`, "
            f"{workers} worker processes, their start included",
            f"{hopper:.2f} s",
            f"ProcessPoolExecutor.map chunksize 1: {per_task:.2f} s",
            per_task / hopper,
            "≥ 10x",
            per_task / hopper >= 10,
            [
                f"ratio to the chunked map (chunksize {chunk}, the ceiling, "
                f"{chunked:.2f} s): {chunked / hopper:.2f}x"
            ],
        )
    )


# ----------------------------------------------------------------------- more processes

_CHILD = """
import json, sys, time
from hopper import RunConfig, run
include = tuple(sys.argv[1].split(",")) if sys.argv[1] else ()
started = time.perf_counter()
summary = run(RunConfig(source="s3://bucket", target="lambda:stub", concurrency=int(sys.argv[2]),
                        include=include))
print(json.dumps({"n": summary.counts.dispatched, "s": time.perf_counter() - started}))
"""


def processes(items: int, latency_ms: int) -> None:
    """Would dispatching from two processes help? Two runs over halves of the keys at once,
    against one run over all of them with the same total concurrency (issue 5, section 5:
    measure before building it)."""
    say("one process or two ...")

    def start(include: str, concurrency: int) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", _CHILD, include, str(concurrency)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    def rate(children: list[subprocess.Popen[str]]) -> float:
        results = [json.loads(child.communicate()[0]) for child in children]
        assert sum(r["n"] for r in results) == items
        return items / max(r["s"] for r in results)

    halves = [
        ",".join(f"day={d:02}/*" for d in range(0, 5)),
        ",".join(f"day={d:02}/*" for d in range(5, 10)),
    ]
    compared = []
    with stub(keys=items, invoke_ms=latency_ms):
        for total in (64, 128, 256):
            one = rate([start("", total)])
            two = rate([start(halves[0], total // 2), start(halves[1], total // 2)])
            compared.append(
                f"{total} in flight: one process {one:,.0f}/s, two {two:,.0f}/s ({two / one:.2f}x)"
            )
    EXTRA.append(
        f"- One process or two ({items:,} one-item invokes at {latency_ms} ms; two processes "
        "split the keys and the concurrency): " + "; ".join(compared) + "."
    )


# ---------------------------------------------------------------------------------------- P7


def _import_seconds(codes: dict[str, str], repeat: int = 15) -> dict[str, float]:
    """Median seconds each code takes in a fresh interpreter, less an empty one's. The codes
    take turns, so that the machine's drift (about 15% here) falls on all of them alike."""
    codes = {"": "pass", **codes}
    times: dict[str, list[float]] = {name: [] for name in codes}
    for _ in range(repeat):
        for name, code in codes.items():
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            times[name].append(time.perf_counter() - started)
    empty = statistics.median(times.pop(""))
    return {name: statistics.median(spent) - empty for name, spent in times.items()}


_FIRST_CALL = """
import json, sys
before = set(sys.modules)
from hopper.handler import handler

class Context:
    function_name = "hopper"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:hopper"
    def get_remaining_time_in_millis(self):
        return 60_000

handler({"source": "s3://bucket", "target": "lambda:stub"}, Context())
loaded = [name for name, module in sys.modules.items()
          if name not in before and getattr(module, "__spec__", None) is not None
          and ".moves" not in name and not name.startswith("__")]
print(json.dumps(sorted(loaded)))
"""


def p7() -> None:
    """The modules one real invocation of the handler loads (against the stub), imported cold,
    against `import boto3`."""
    say("P7: cold import ...")
    with stub(keys=10):
        done = subprocess.run(
            [sys.executable, "-c", _FIRST_CALL], check=True, capture_output=True, text=True
        )
    modules = json.loads(done.stdout.strip().splitlines()[-1])
    seconds = _import_seconds(
        {
            "boto3": "import boto3",
            "handler": "import hopper.handler",
            "first_call": "import " + ", ".join(modules),
        }
    )
    boto3, handler, first_call = seconds["boto3"], seconds["handler"], seconds["first_call"]
    ours = sorted(m for m in modules if m.startswith("hopper"))
    ROWS.append(
        Row(
            "P7",
            "cold import of the Lambda handler with every module its first invocation loads "
            f"({len(modules)} modules, {len(ours)} of them hopper's; botocore, not boto3)",
            f"{first_call * 1000:.0f} ms",
            f"import boto3 {boto3 * 1000:.0f} ms",
            first_call / boto3,
            "≤ 1.2x",
            first_call / boto3 <= 1.2,
            [
                f"`import hopper.handler` alone: {handler * 1000:.0f} ms (botocore loads on first use)"
            ],
        )
    )


# ------------------------------------------------------------------------------------ report


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    import botocore

    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({model}), "
        f"Python {platform.python_version()}, botocore {botocore.__version__}, Node.js {node}"
    )


def table() -> str:
    lines = [
        "| | what | hopper | baseline (same run) | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in ROWS:
        ratio = f"{row.ratio:.1f}x" if row.ratio is not None else "-"
        met = "yes" if row.met else "**no**"
        what = row.what + "".join(f"<br>{note}" for note in row.notes)
        lines.append(
            f"| {row.key} | {what} | {row.measured} | {row.baseline} | {ratio} | "
            f"{row.target} | {met} |"
        )
    return "\n".join(lines)


def write(path: Path, took: float) -> None:
    text = f"""# Benchmarks

Written by `make bench` ({took:.0f} s). Every ratio is against a baseline measured in the same
run, on the same machine, against the same stub; absolute figures move with the machine.

Machine: {machine()}.

{table()}

{chr(10).join(EXTRA)}

## How to reproduce

    make bench                                          # all of the above, rewrites this file
    .venv/bin/python benchmarks/suite.py --only P3,P4   # some rows, printed only

The stubs (`benchmarks/stubs/aws_stub.js`) answer Lambda Invoke after a fixed latency (optionally
with a share of 429 throttles) and S3 ListObjectsV2 over a synthetic sorted key space
(`day=NN/part NNNNNNNN+v1.csv`, which needs URL-decoding) after a fixed page latency, honouring
prefix, delimiter, start-after, continuation tokens and `encoding-type=url`. What each baseline
is:

- **seed loop**: the 2017 post's loop, one boto3 `invoke` after another.
- **ThreadPool(64)**: boto3 `invoke` from 64 threads, as PyWren and Lithops fan out.
- **boto3 paginator**: `list_objects_v2` pages, one after another.
- **ProcessPoolExecutor.map**: the standard library's pool over the same number of workers.

Other benchmarks: `benchmarks/bench_moto.py` (against moto over HTTP) and
`benchmarks/bench_incremental.py` (memory of an incremental run over 1M keys of state).
"""
    path.write_text(text)


STEPS: dict[str, Callable[[], None]] = {
    "ceiling": stub_ceiling,
    "P1": lambda: (p1_p2(20_000, 20), p1_faults(5_000, 20, 0.05)),  # type: ignore[func-returns-value]
    "P3": lambda: p3(100_000),
    "P4": lambda: p4(200_000, 80),
    "P5": lambda: p5(1_000_000),
    "P6": lambda: p6(10_000),
    "P7": p7,
    "P8": lambda: (p8(200_000, 0, 5), p8(100_000, 80, 8)),  # type: ignore[func-returns-value]
    "P9": lambda: p9(10_000_000),
    "processes": lambda: processes(30_000, 20),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--only", help="comma-separated steps: ceiling,P1,P3,P4,P5,P6,P7,P8,P9,processes"
    )
    parser.add_argument("--write", action="store_true", help="rewrite BENCHMARKS.md")
    parser.add_argument("--p5-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.p5_child:
        p5_child(args.p5_child)
        return
    chosen = args.only.split(",") if args.only else list(STEPS)
    started = time.perf_counter()
    for name in chosen:
        STEPS[name]()
    took = time.perf_counter() - started
    print(table())
    print("\n".join(EXTRA))
    if args.write:
        write(HERE.parent / "BENCHMARKS.md", took)
        say("wrote BENCHMARKS.md")


if __name__ == "__main__":
    main()
