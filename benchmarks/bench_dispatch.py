"""Invokes/s with real HTTP round trips of a fixed latency, against the seed's one-at-a-time loop.

    .venv/bin/python benchmarks/bench_dispatch.py [--items 2000] [--latency-ms 20]

The endpoint is a small Node.js stub (benchmarks/lambda_stub.js) on loopback that answers
Lambda's Invoke after LATENCY ms, standing in for the service's round trip. The baseline,
measured in the same run, is the seed's loop: one boto3 `invoke` after another. Both send
every item of a local folder of ITEMS files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import boto3

from hopper import RunConfig, run
from hopper.sources import LocalSource


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--latency-ms", type=int, default=20)
    args = parser.parse_args()
    node = shutil.which("node")
    if node is None:
        raise SystemExit("node is needed for the Lambda stub")
    stub = subprocess.Popen(
        [node, str(Path(__file__).with_name("lambda_stub.js")), "0", str(args.latency_ms)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert stub.stdout is not None
        endpoint = f"http://127.0.0.1:{stub.stdout.readline().strip()}"
        os.environ.update(
            AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
            AWS_DEFAULT_REGION="us-east-1",
        )  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.items):
                (Path(tmp) / f"d{i:06}.csv").write_text("x")
            keys = [item.key for page in LocalSource(tmp).pages() for item in page.items]

            client = boto3.client("lambda")
            started = time.perf_counter()
            for key in keys:
                client.invoke(
                    FunctionName="stub",
                    InvocationType="Event",
                    Payload=json.dumps({"dataset_prefix": key}),
                )
            seed = time.perf_counter() - started

            rates = {}
            for concurrency in (1, 16, 64):
                started = time.perf_counter()
                summary = run(RunConfig(source=tmp, target="lambda:stub", concurrency=concurrency))
                rates[concurrency] = time.perf_counter() - started
                assert summary.counts.dispatched == args.items, summary.to_dict()
        sent = int(urllib.request.urlopen(f"{endpoint}/count").read())
        assert sent == args.items * 4, sent
    finally:
        stub.terminate()
    base = args.items / seed
    print(f"{args.items} invokes, {args.latency_ms} ms round trip")
    print(f"seed loop (one at a time)  {base:8.0f} invokes/s  (baseline)")
    for concurrency, seconds in rates.items():
        rate = args.items / seconds
        print(
            f"hopper run c={concurrency:<3}          {rate:8.0f} invokes/s  ratio {rate / base:.1f}"
        )


if __name__ == "__main__":
    main()
