"""Listing keys/s and invokes/s against moto over real HTTP, each with a same-run baseline.

    .venv/bin/python benchmarks/bench_moto.py [--keys 5000] [--invokes 1000]

Baselines: for listing, a bare boto3 paginator loop over the same bucket; for invoking, the
seed's loop (one synchronous-client `invoke` after another). The figures are for reference
only: moto is a single Python process, so absolute rates say little about AWS.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from hopper import RunConfig, plan, run


def setup(endpoint: str, keys: int) -> Any:
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
    )  # fmt: skip
    session = boto3.session.Session(region_name="us-east-1")
    s3 = session.client("s3")
    s3.create_bucket(Bucket="bench-bucket")
    with ThreadPoolExecutor(16) as pool:
        list(
            pool.map(
                lambda i: s3.put_object(Bucket="bench-bucket", Key=f"d/{i:07}", Body=b""),
                range(keys),
            )
        )
    role = session.client("iam").create_role(RoleName="bench", AssumeRolePolicyDocument="{}")[
        "Role"
    ]["Arn"]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("h.py", "def handler(e, c):\n    return 1\n")
    session.client("lambda").create_function(
        FunctionName="bench-worker", Runtime="python3.12", Role=role, Handler="h.handler",
        Code={"ZipFile": buffer.getvalue()},
    )  # fmt: skip
    return session


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=5000)
    parser.add_argument("--invokes", type=int, default=1000)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    import urllib.request

    urllib.request.urlopen(
        urllib.request.Request(
            f"{endpoint}/moto-api/config",
            data=json.dumps({"lambda": {"use_docker": False}}).encode(),
            method="POST",
        )
    ).read()
    try:
        session = setup(endpoint, args.keys)
        s3 = session.client("s3")

        start = time.perf_counter()
        baseline_keys = sum(
            len(page.get("Contents", []))
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket="bench-bucket")
        )
        baseline_list = time.perf_counter() - start

        start = time.perf_counter()
        planned = plan(
            RunConfig(source="s3://bench-bucket", target="bench-worker"), session=session
        )
        hopper_list = time.perf_counter() - start
        assert planned.listed == baseline_keys == args.keys

        # The seed: list one page, then invoke one key after another.
        lam = session.client("lambda")
        start = time.perf_counter()
        listing = s3.list_objects_v2(Bucket="bench-bucket", MaxKeys=args.invokes)
        for entry in listing["Contents"]:
            event = {"config_bucket": "bench-bucket", "dataset_prefix": entry["Key"]}
            response = lam.invoke(
                FunctionName="bench-worker", InvocationType="Event", Payload=json.dumps(event)
            )
            assert "FunctionError" not in response
        baseline_invoke = time.perf_counter() - start

        hopper_invoke = {}
        for concurrency in (1, 16):
            start = time.perf_counter()
            summary = run(
                RunConfig(
                    source="s3://bench-bucket",
                    target="bench-worker",
                    limit=args.invokes,
                    concurrency=concurrency,
                ),
                session=session,
            )
            hopper_invoke[concurrency] = time.perf_counter() - start
            assert summary.counts.dispatched == args.invokes, summary.to_dict()
    finally:
        server.stop()

    list_rate, base_list_rate = rate(args.keys, hopper_list), rate(args.keys, baseline_list)
    base_inv_rate = rate(args.invokes, baseline_invoke)
    print(f"listing  bare paginator   {base_list_rate:8.0f} keys/s (baseline)")
    print(
        f"listing  hopper plan      {list_rate:8.0f} keys/s     ratio {list_rate / base_list_rate:.2f}"
    )
    print(f"invoking seed loop        {base_inv_rate:8.0f} invokes/s  (baseline; listing included)")
    for concurrency, seconds in hopper_invoke.items():
        inv_rate = rate(args.invokes, seconds)
        print(
            f"invoking hopper run c={concurrency:<3} {inv_rate:8.0f} invokes/s  "
            f"ratio {inv_rate / base_inv_rate:.2f}"
        )


if __name__ == "__main__":
    main()
