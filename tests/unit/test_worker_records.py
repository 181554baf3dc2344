"""Destination records, as the Lambda docs give them, read into a run's state; the merge
rules; and when a batch without a record counts as lost."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hopper.config import RunConfig
from hopper.event import EventRecipe
from hopper.items import DISPATCHED, FAILED, PENDING, Batch, Item, Outcome
from hopper.runstate.incremental import Incremental
from hopper.runstate.record import (
    RunRecord,
    add_worker_records,
    report,
    results,
    unsettled_items,
    worker_records,
)
from hopper.runstate.tracking import Unusable, lost_after, parse_record

from .memory_store import MemoryStore

RUN = "20261130T000000Z-abcdef"
RECIPE = EventRecipe(run_id=RUN, payload={"job": "nightly"}, bucket="data")
BATCHES = [Batch(i + 1, (Item(f"k{i}", etag=f"e{i}"),)) for i in range(4)]
LOST_AFTER = 600.0
T0 = 1_800_000_000.0


def event(batch: Batch, attempt: int = 1) -> dict[str, Any]:
    return dict(json.loads(RECIPE.encode(batch, attempt)))


def success(batch: Batch, response: Any = None) -> str:
    """The record of a successful invocation, in the shape of the Lambda developer guide."""
    return json.dumps(
        {
            "version": "1.0",
            "timestamp": "2026-11-30T18:16:05.568Z",
            "requestContext": {
                "requestId": "e4b46cbf-b738-xmpl-8880-a18cdf61200e",
                "functionArn": "arn:aws:lambda:us-east-2:123456789012:function:worker:$LATEST",
                "condition": "Success",
                "approximateInvokeCount": 1,
            },
            "requestPayload": event(batch),
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
            "responsePayload": response,
        }
    )


def failure(batch: Batch, condition: str = "RetriesExhausted") -> str:
    """The record of an invocation that failed every attempt, as the guide gives it."""
    record: dict[str, Any] = {
        "version": "1.0",
        "timestamp": "2026-11-30T18:16:05.568Z",
        "requestContext": {
            "requestId": "e4b46cbf-b738-xmpl-8880-a18cdf61200e",
            "functionArn": "arn:aws:lambda:us-east-2:123456789012:function:worker:$LATEST",
            "condition": condition,
            "approximateInvokeCount": 3,
        },
        "requestPayload": event(batch),
    }
    if condition == "RetriesExhausted":
        record["responseContext"] = {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        }
        record["responsePayload"] = {
            "errorMessage": f"cannot parse {batch.first_key}",
            "errorType": "ValueError",
            "stackTrace": ['  File "/var/task/worker.py", line 9, in handler\n'],
        }
    return json.dumps(record)


def test_a_success_record_names_its_batch_and_keeps_the_result() -> None:
    record = parse_record(success(BATCHES[0], {"rows": 7}))
    assert record.run_id == RUN
    assert record.key == event(BATCHES[0])["hopper"]["idempotency_key"]
    assert record.line["worker"] == "processed" and record.line["result"] == {"rows": 7}
    assert record.line["batch"] == 1 and record.line["request_id"].startswith("e4b46cbf")


def test_a_failure_record_keeps_the_workers_error() -> None:
    line = parse_record(failure(BATCHES[1])).line
    assert line["worker"] == "worker_failed" and line["condition"] == "RetriesExhausted"
    assert (line["error_type"], line["error"]) == ("ValueError", "cannot parse k1")
    assert line["invocations"] == 3


def test_an_event_that_expired_is_a_worker_failure() -> None:
    line = parse_record(failure(BATCHES[2], condition="EventAgeExceeded")).line
    assert line["worker"] == "worker_failed" and line["error_type"] == "EventAgeExceeded"


def test_a_record_without_a_hopper_block_is_an_orphan() -> None:
    record = json.loads(success(BATCHES[0]))
    del record["requestPayload"]["hopper"]
    with pytest.raises(Unusable) as why:
        parse_record(json.dumps(record))
    assert why.value.orphan


@pytest.mark.parametrize("body", ["not json", "[1, 2]", json.dumps({"Records": []})])
def test_a_message_that_is_no_record_is_unusable(body: str) -> None:
    with pytest.raises(Unusable) as why:
        parse_record(body)
    assert not why.value.orphan


def recorded_run(store: MemoryStore) -> None:
    """A tracked run of four one-item batches: three sent as event invokes (pending), one
    whose dispatch failed."""
    record = RunRecord(store, RUN)
    config = RunConfig(source="s3://data", target="worker", state="memory")
    record.start(config, tracked_by={"queue": "q", "lost_after": LOST_AFTER})
    for batch in BATCHES[:3]:
        record.record(Outcome(batch, DISPATCHED, 1, worker=PENDING))
    record.record(Outcome(BATCHES[3], FAILED, 6, error_type="RetriesExhausted", error="429"))
    record.finish({"status": "failed"}, keep_active=False)
    # The lines were written "now": date them T0, so that the tests own the clock.
    ledger = store.objects[f"runs/{RUN}/ledger.jsonl"].decode()
    lines = [json.loads(line) | {"at": T0} for line in ledger.splitlines()]
    store.objects[f"runs/{RUN}/ledger.jsonl"] = "".join(
        json.dumps(line) + "\n" for line in lines
    ).encode()


def test_duplicates_count_once_and_a_success_wins_over_a_failure() -> None:
    store = MemoryStore()
    recorded_run(store)
    lines = [parse_record(body).line for body in (failure(BATCHES[0]), success(BATCHES[0]))]
    add_worker_records(store, RUN, lines)
    # The same records again, in the other order, in a later collect.
    add_worker_records(store, RUN, list(reversed(lines)))
    add_worker_records(store, RUN, [parse_record(failure(BATCHES[1])).line] * 2)
    best = worker_records(store, RUN)
    assert best[lines[0]["key"]]["worker"] == "processed"
    document = report(store, RUN, now=T0 + 1)
    assert (document["processed"], document["worker_failed"], document["pending"]) == (1, 1, 1)
    assert (document["dispatched"], document["failed"], document["lost"]) == (3, 1, 0)
    assert document["status"] == "failed"
    assert sorted(f["status"] for f in document["failures"]) == ["failed", "worker_failed"]


def test_a_batch_without_a_record_is_lost_once_its_record_cannot_come() -> None:
    store = MemoryStore()
    recorded_run(store)
    assert report(store, RUN, now=T0 + LOST_AFTER - 1)["pending"] == 3
    after = report(store, RUN, now=T0 + LOST_AFTER + 1)
    assert (after["pending"], after["lost"]) == (0, 3)
    assert {f["status"] for f in after["failures"]} == {"lost", "failed"}


def test_retry_takes_failed_worker_failed_and_lost_batches() -> None:
    store = MemoryStore()
    recorded_run(store)
    add_worker_records(
        store,
        RUN,
        [parse_record(success(BATCHES[0])).line, parse_record(failure(BATCHES[1])).line],
    )
    # Batch 3 has no record yet; batch 4's dispatch failed.
    assert [item.key for item in unsettled_items(store, RUN)] == ["k1", "k3"]
    states = {line["keys"][0]: line["status"] for line in results(store, RUN)}
    assert states == {"k0": "processed", "k1": "worker_failed", "k2": "pending", "k3": "failed"}


def test_lost_after_covers_the_event_age_and_every_attempt() -> None:
    assert lost_after(3600, 2, 60) == 3600 + 3 * 60 + 300


def test_a_later_segment_supersedes_what_an_earlier_one_sent_past_its_cursor() -> None:
    store = MemoryStore()
    record = RunRecord(store, RUN)
    config = RunConfig(source="s3://data", target="worker", state="memory")
    record.start(config)
    # Segment 1 settled k0 and k1, and k3 out of order; k2 was cut short. Checkpoint: k1.
    for index, status in ((0, DISPATCHED), (1, DISPATCHED), (3, DISPATCHED), (2, FAILED)):
        record.record(Outcome(BATCHES[index], status, 1))
    record.note(event="resumed", cursor="k1")
    # Segment 2 sent k2 and k3 again.
    for index in (2, 3):
        record.record(Outcome(BATCHES[index], DISPATCHED, 1))
    record.finish({"status": "succeeded"}, keep_active=False)
    document = report(store, RUN)
    assert (document["dispatched"], document["failed"]) == (4, 0)
    assert list(unsettled_items(store, RUN)) == []


def test_incremental_leaves_a_pending_item_alone_until_its_record_comes() -> None:
    store = MemoryStore()
    recorded_run(store)
    key = "incremental/job.jsonl"
    pending = [[RUN, event(batch)["hopper"]["idempotency_key"], T0] for batch in BATCHES[:3]]
    store.put(
        key,
        "".join(
            json.dumps({"k": batch.first_key, "e": batch.items[0].etag, "p": p}) + "\n"
            for batch, p in zip(BATCHES[:3], pending, strict=True)
        ).encode(),
    )
    add_worker_records(
        store,
        RUN,
        [parse_record(success(BATCHES[0])).line, parse_record(failure(BATCHES[1])).line],
    )
    incremental = Incremental(store, key, run_id="next", start_after=None)
    decisions = [incremental.changed(batch.items[0]) for batch in BATCHES[:3]]
    # k0 succeeded: done. k1 failed: sent again. k2 has no record yet: neither.
    assert decisions == [False, True, False]
    incremental.commit(end=None)
    entries = [json.loads(line) for line in store.lines(key)]
    assert [(e["k"], "p" in e) for e in entries] == [("k0", False), ("k2", True)]
    incremental.close()


def test_a_result_over_256_kb_is_cut_and_marked() -> None:
    from hopper.runstate.record import RESULT_LIMIT, kept_result

    assert kept_result({"rows": 7}) == {"result": {"rows": 7}}
    big = {"blob": "é" * RESULT_LIMIT}
    kept = kept_result(big)
    assert kept["result_cut"] == len(json.dumps(big, ensure_ascii=False).encode())
    assert isinstance(kept["result"], str)
    assert len(kept["result"].encode()) <= RESULT_LIMIT
