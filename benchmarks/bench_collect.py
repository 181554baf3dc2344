"""How fast `collect` drains destination records from an SQS queue into a run's state.

    .venv/bin/python benchmarks/bench_collect.py [--records N]

Against moto's SQS in process. The baseline, measured in the same run on an identical queue,
is the least any drain must do: receive ten at a time and delete ten at a time, storing
nothing. collect also parses each record, stores them in the run's ledger (a folder here), and
recounts the run once at the end. moto's receive scans the whole queue each time, so both
rates fall as the queue grows; the third line times hopper's own work per record (parse,
store, recount) without a queue. Reports records/s and ratios; never passes or fails on time.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Any

os.environ.update(
    AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
)

import boto3
from moto import mock_aws

from hopper.config import RunConfig
from hopper.event import EventRecipe
from hopper.items import DISPATCHED, PENDING, Batch, Item, Outcome
from hopper.runstate.record import (
    RunRecord,
    add_worker_records,
    refresh,
    report,
)
from hopper.runstate.store import LocalStore
from hopper.runstate.tracking import collect, parse_record

RUN = "20261130T000000Z-bench0"


def recipe_for() -> EventRecipe:
    return EventRecipe(run_id=RUN, payload={}, bucket="data")


def _record(recipe: EventRecipe, batch: Batch) -> dict[str, Any]:
    """A Success record, as Lambda sends it to a destination."""
    return {
        "version": "1.0",
        "timestamp": "2026-11-30T12:00:00.000Z",
        "requestContext": {"requestId": f"r{batch.index}", "condition": "Success"},
        "requestPayload": json.loads(recipe.encode(batch, 1)),
        "responseContext": {"statusCode": 200},
        "responsePayload": {"rows": 7},
    }


def fill(sqs: Any, url: str, batches: list[Batch]) -> None:
    recipe = recipe_for()
    for start in range(0, len(batches), 10):
        entries = [
            {"Id": str(i), "MessageBody": json.dumps(_record(recipe, batch))}
            for i, batch in enumerate(batches[start : start + 10])
        ]
        sqs.send_message_batch(QueueUrl=url, Entries=entries)


def bare_drain(sqs: Any, url: str) -> int:
    drained = 0
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if not messages:
            return drained
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
        )  # fmt: skip
        drained += len(messages)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1000)
    args = parser.parse_args()
    batches = [Batch(i + 1, (Item(f"key/{i:07}", etag=f"e{i}"),)) for i in range(args.records)]
    with mock_aws(), tempfile.TemporaryDirectory() as tmp:
        sqs = boto3.client("sqs")
        store = LocalStore(tmp)
        record = RunRecord(store, RUN)
        record.start(
            RunConfig(source="s3://data", target="worker", state=tmp),
            tracked_by={"queue": "q", "lost_after": 3600},
        )
        for batch in batches:
            record.record(Outcome(batch, DISPATCHED, 1, worker=PENDING))
        record.finish({"status": "succeeded"}, keep_active=False)

        base_url = sqs.create_queue(QueueName="bare")["QueueUrl"]
        fill(sqs, base_url, batches)
        started = time.perf_counter()
        drained = bare_drain(sqs, base_url)
        bare = time.perf_counter() - started

        url = sqs.create_queue(QueueName="collect")["QueueUrl"]
        fill(sqs, url, batches)
        started = time.perf_counter()
        done = collect(store, url, sqs=sqs, budget=600)
        ours = time.perf_counter() - started
        assert drained == done.recorded == args.records, (drained, done.to_dict())
        assert report(store, RUN)["processed"] == args.records
        bodies = [json.dumps(_record(recipe_for(), batch)) for batch in batches]
        started = time.perf_counter()
        lines = [parse_record(body).line for body in bodies]
        for start in range(0, len(lines), 100):
            add_worker_records(store, RUN, lines[start : start + 100])
        refresh(store, RUN)
        own = time.perf_counter() - started
    print(f"bare receive+delete   {drained / bare:9,.0f} records/s on moto (baseline)")
    print(
        f"hopper collect        {done.recorded / ours:9,.0f} records/s on moto, ratio "
        f"{bare / ours:.2f} to the baseline"
    )
    print(f"hopper's own work     {args.records / own:9,.0f} records/s (parse, store, recount)")


if __name__ == "__main__":
    main()
