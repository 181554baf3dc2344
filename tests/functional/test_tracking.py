"""Tracking event invokes to the worker's own result, on moto.

moto stores a function's asynchronous invocation config but runs nothing and delivers no
destination record: these tests write the records Lambda would send, in the documented shape,
into moto's SQS queue themselves, built from the events moto's Lambda really received.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hopper import RunConfig, run
from hopper.cli import cli
from hopper.runstate import record as record_module
from hopper.runstate.record import list_runs, report
from hopper.runstate.store import open_store

from .conftest import Received

KEYS = [f"datasets/{i:02}/part.csv" for i in range(12)]
FAILING = {"datasets/03/part.csv", "datasets/07/part.csv"}


class Queue:
    def __init__(self, moto_session: Any) -> None:
        self.sqs = moto_session.client("sqs")
        self.url = self.sqs.create_queue(QueueName="hopper-results")["QueueUrl"]
        self.arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]

    def send(self, body: Any) -> None:
        text = body if isinstance(body, str) else json.dumps(body)
        self.sqs.send_message(QueueUrl=self.url, MessageBody=text)

    def left(self) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )


def record(event: dict[str, Any], *, failed: bool) -> dict[str, Any]:
    """What Lambda sends a destination for one async invocation of `event`."""
    context = {
        "requestId": "8f5f5b9a-xmpl-4c0e-93c1-7c1a8e5d0e11",
        "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:worker:$LATEST",
        "condition": "RetriesExhausted" if failed else "Success",
        "approximateInvokeCount": 3 if failed else 1,
    }
    out: dict[str, Any] = {
        "version": "1.0",
        "timestamp": "2026-11-30T12:00:00.000Z",
        "requestContext": context,
        "requestPayload": event,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
    }
    if failed:
        out["responseContext"]["functionError"] = "Unhandled"
        out["responsePayload"] = {
            "errorMessage": f"cannot parse {event['dataset_prefix']}",
            "errorType": "ValueError",
        }
    else:
        out["responsePayload"] = {"rows": 7}
    return out


@pytest.fixture
def tracked(moto_session: Any, bucket: str, function: str) -> Queue:
    """The worker's async config sends both outcomes to a queue, as `hopper deploy` sets up."""
    s3 = moto_session.client("s3")
    for key in KEYS:
        s3.put_object(Bucket=bucket, Key=key, Body=b"id\n1\n")
    queue = Queue(moto_session)
    moto_session.client("lambda").put_function_event_invoke_config(
        FunctionName=function,
        Qualifier="$LATEST",
        MaximumRetryAttempts=2,
        MaximumEventAgeInSeconds=3600,
        DestinationConfig={
            "OnSuccess": {"Destination": queue.arn},
            "OnFailure": {"Destination": queue.arn},
        },
    )
    return queue


def cli_run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


class Setup:
    """A bucket of KEYS, a worker whose async config sends both outcomes to `queue`, what
    moto's Lambda received, and a state folder."""

    def __init__(
        self, tmp_path: Path, session: Any, bucket: str, function: str, received: Received,
        queue: Queue,
    ) -> None:  # fmt: skip
        self.session = session
        self.bucket = bucket
        self.function = function
        self.received = received
        self.queue = queue
        self.state = str(tmp_path / "state")

    def config(self, **options: Any) -> RunConfig:
        return RunConfig(
            source=f"s3://{self.bucket}",
            target=self.function,
            state=self.state,
            results_queue=self.queue.url,
            **options,
        )

    def events(self) -> list[dict[str, Any]]:
        return self.received.to(self.function)

    def answer(self, events: list[dict[str, Any]] | None = None) -> None:
        """Send the record of each event (all received so far): a failure for FAILING."""
        for event in self.events() if events is None else events:
            self.queue.send(record(event, failed=event["dataset_prefix"] in FAILING))


@pytest.fixture
def setup(
    tmp_path: Path, moto_session: Any, bucket: str, function: str, received: Received,
    tracked: Queue,
) -> Setup:  # fmt: skip
    return Setup(tmp_path, moto_session, bucket, function, received, tracked)


def test_records_are_collected_into_the_run_and_retry_sends_what_failed(setup: Setup) -> None:
    summary = run(setup.config(), session=setup.session)
    assert summary.status == "succeeded" and summary.tracking
    assert (summary.counts.dispatched, summary.counts.pending) == (12, 12)
    events = setup.events()
    assert len(events) == 12
    setup.answer()
    # Lambda may deliver a record twice; a run this state does not know; not a record at all.
    setup.queue.send(record(events[0], failed=False))
    stranger = json.loads(json.dumps(events[1]))
    stranger["hopper"]["run_id"] = "20200101T000000Z-000000"
    setup.queue.send(record(stranger, failed=False))
    setup.queue.send("this is not a destination record")

    collected = cli_run("collect", "--state", setup.state, "--json")
    assert collected.exit_code == 0, collected.output
    counts = json.loads(collected.stdout)
    assert counts["received"] == 15 and counts["recorded"] == 13
    assert (counts["orphaned"], counts["malformed"]) == (1, 1)
    assert setup.queue.left() == 0  # every message deleted once stored (or dropped)

    store = open_store(setup.state)
    document = report(store, summary.run_id)
    assert (document["processed"], document["worker_failed"], document["pending"]) == (10, 2, 0)
    assert document["status"] == "failed"
    [listed] = list_runs(store)
    assert (listed["processed"], listed["worker_failed"], listed["status"]) == (10, 2, "failed")

    lines = cli_run("report", summary.run_id, "--state", setup.state, "--results")
    assert lines.exit_code == 0, lines.output
    results = [json.loads(line) for line in lines.stdout.splitlines()]
    assert len(results) == 12
    failed = {r["keys"][0]: r for r in results if r["status"] == "worker_failed"}
    assert set(failed) == FAILING
    assert failed["datasets/03/part.csv"]["error"] == "cannot parse datasets/03/part.csv"
    assert all(r["result"] == {"rows": 7} for r in results if r["status"] == "processed")

    before = len(setup.events())
    retried = cli_run("retry", summary.run_id, "--state", setup.state, "--json")
    assert retried.exit_code == 0, retried.output
    again = [e["dataset_prefix"] for e in setup.events()[before:]]
    assert sorted(again) == sorted(FAILING)
    assert json.loads(retried.stdout)["source"].endswith(f"(retry of {summary.run_id})")


def test_a_batch_without_a_record_is_lost_in_time_and_sent_again(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = run(setup.config(), session=setup.session)
    events = setup.events()
    silent = events[5]["dataset_prefix"]
    for event in events:
        if event["dataset_prefix"] != silent:
            setup.queue.send(record(event, failed=False))
    store = open_store(setup.state)
    assert cli_run("collect", "--state", setup.state).exit_code == 0
    assert report(store, summary.run_id)["pending"] == 1
    # Past the event's age, three attempts of the worker's timeout, and the margin.
    document = store.get(f"runs/{summary.run_id}/summary.json")
    assert document is not None
    lost_after = json.loads(document[0])["tracked_by"]["lost_after"]
    assert lost_after == 3600 + 3 * 120 + 300
    later = time.time() + lost_after + 1
    monkeypatch.setattr(record_module, "clock", lambda: later)
    after = report(store, summary.run_id)
    assert (after["pending"], after["lost"], after["status"]) == (0, 1, "failed")
    before = len(setup.events())
    retried = cli_run("retry", summary.run_id, "--state", setup.state, "--json")
    assert retried.exit_code == 0, retried.output
    assert [e["dataset_prefix"] for e in setup.events()[before:]] == [silent]


def test_an_incremental_run_sends_again_exactly_what_its_workers_did_not_do(
    setup: Setup,
) -> None:
    config = setup.config(incremental=True)
    first = run(config, session=setup.session)
    assert first.counts.pending == 12
    # Nothing came back yet: the next run neither sends the pending items nor calls them done.
    second = run(config, session=setup.session)
    assert (second.counts.dispatched, second.counts.unchanged) == (0, 12)
    setup.answer()
    assert cli_run("collect", "--state", setup.state).exit_code == 0
    before = len(setup.events())
    third = run(config, session=setup.session)
    assert sorted(e["dataset_prefix"] for e in setup.events()[before:]) == sorted(FAILING)
    assert third.counts.unchanged == 10


def test_waiting_for_workers_collects_until_every_batch_has_its_outcome(setup: Setup) -> None:
    """A stand-in for Lambda's destination delivery: it sends each event's record to the
    queue a moment after moto received the event."""
    stop = threading.Event()

    def deliver() -> None:
        sent = 0
        while not stop.is_set():
            events = setup.events()
            setup.answer(events[sent:])
            sent = len(events)
            time.sleep(0.2)

    courier = threading.Thread(target=deliver, daemon=True)
    courier.start()
    try:
        summary = run(setup.config(wait_for_workers=30), session=setup.session)
    finally:
        stop.set()
        courier.join()
    assert summary.waited
    assert (summary.counts.processed, summary.counts.worker_failed) == (10, 2)
    assert summary.counts.pending == 0
    assert summary.status == "failed" and summary.exit_code == 1
    assert {f["keys"][0] for f in summary.failures} == FAILING


def test_a_worker_that_does_not_send_its_outcomes_to_the_queue_is_bad_input(
    tmp_path: Path, moto_session: Any, bucket: str, function: str, received: Received
) -> None:
    queue = Queue(moto_session)
    result = cli_run(
        "run", f"s3://{bucket}", "--target", function, "--state", str(tmp_path / "state"),
        "--results-queue", queue.url,
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert "does not send OnSuccess and OnFailure records to" in line
    assert "put-function-event-invoke-config" in line
    assert received.to(function) == []


def test_runs_and_report_collect_first_unless_told_not_to(setup: Setup) -> None:
    summary = run(setup.config(), session=setup.session)
    for event in setup.events():
        setup.queue.send(record(event, failed=False))
    skipped = cli_run("runs", "--state", setup.state, "--json", "--no-collect")
    assert json.loads(skipped.stdout)[0]["pending"] == 12 and setup.queue.left() == 12
    listed = cli_run("runs", "--state", setup.state, "--json")
    assert listed.exit_code == 0, listed.output
    [doc] = json.loads(listed.stdout)
    assert (doc["processed"], doc["pending"], doc["status"]) == (12, 0, "succeeded")
    assert "collected 12 worker outcomes" in listed.stderr
    shown = cli_run("report", summary.run_id, "--state", setup.state)
    assert shown.exit_code == 0, shown.output
    assert any(line.split() == ["processed", "12"] for line in shown.stdout.splitlines())


def test_each_deployed_tick_first_collects_what_the_workers_sent(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hopper.handler import handler

    from .test_handler import Context

    state = f"s3://{setup.bucket}/_hopper/state"
    for name, value in {
        "HOPPER_SOURCE": f"s3://{setup.bucket}",
        "HOPPER_TARGET": setup.function,
        "HOPPER_STATE": state,
        "HOPPER_INCREMENTAL": "true",
        "HOPPER_RESULTS_QUEUE": setup.queue.url,
    }.items():
        monkeypatch.setenv(name, value)
    first = handler({}, Context(60))
    assert first["pending"] == 12 and first["tracking"] is True
    assert first["collected"]["received"] == 0
    setup.answer()
    second = handler({}, Context(60))
    assert second["collected"]["recorded"] == 12 and setup.queue.left() == 0
    # The tick sent again exactly what its workers failed on.
    assert second["dispatched"] == 2 and second["unchanged"] == 10
    store = open_store(state)
    first_run = next(r for r in list_runs(store) if r["run_id"] == first["run_id"])
    assert (first_run["processed"], first_run["worker_failed"]) == (10, 2)
