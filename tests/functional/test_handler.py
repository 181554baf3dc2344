"""The Lambda handler on moto: seed events, environment defaults, continuation and its bound."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pytest

from hopper.errors import HopperError, InvalidInput
from hopper.handler import handler, options_from_event

from .conftest import Received, create_function


class Context:
    """An emulated Lambda context whose clock runs for `seconds`."""

    def __init__(
        self, seconds: float, arn: str = "arn:aws:lambda:us-east-1:123456789012:function:hopper"
    ) -> None:
        self.function_name = "hopper"
        self.invoked_function_arn = arn
        self.aws_request_id = "req-1"
        self.memory_limit_in_mb = 256
        self._end = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._end - time.monotonic()) * 1000))


def put(moto_session: Any, bucket: str, keys: list[str]) -> None:
    s3 = moto_session.client("s3")
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")


def test_seed_event_reaches_workers_with_dataset_prefix(
    moto_session: Any,
    bucket: str,
    function: str,
    received: Received,
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = [f"dataset-{i}/data.csv" for i in range(5)] + ["_hopper/artifacts/hopper-abc.zip"]
    put(moto_session, bucket, keys)
    seed = {"config_bucket": bucket, "lambda_function": function}
    result = handler(seed, Context(60))
    assert result["status"] == "succeeded" and result["continued"] is False
    events = received.to(function)
    assert sorted(e["dataset_prefix"] for e in events) == keys[:5]  # never hopper's own files
    for event in events:
        assert event["config_bucket"] == bucket and event["lambda_function"] == function
    assert set(received.invocation_types) == {"Event"}
    emf = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert emf["ItemsDispatched"] == 5 and emf["ItemsFailed"] == 0
    # The run ended in this invocation; its event invokes' outcomes come later, if tracked.
    assert (emf["RunsFinished"], emf["WorkerProcessed"], emf["WorkerFailed"]) == (1, 0, 0)
    declared = [m["Name"] for m in emf["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
    assert declared == [
        "ItemsDispatched", "ItemsFailed", "WorkerProcessed", "WorkerFailed", "RunsFinished"
    ]  # fmt: skip
    assert emf["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["FunctionName"]]


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"lambda_function": "w"}, "Missing config_bucket"),
        ({"config_bucket": "b"}, "Missing lambda_function"),
        ({"source": "s3://bkt-1"}, "Missing target"),
        ({}, "Missing source"),
        ([1, 2], "must be a JSON object"),
        (
            {"source": "s3://bkt-1", "target": "w", "batch_size": 0},
            "--batch-size must be greater than 0",
        ),
    ],
)
def test_bad_events_name_what_is_missing(event: Any, message: str, aws_env: None) -> None:
    with pytest.raises(InvalidInput) as caught:
        handler(event, Context(60))
    assert message in str(caught.value)


def test_environment_gives_defaults_and_scheduled_events_use_them() -> None:
    environ = {
        "HOPPER_SOURCE": "s3://bkt-1/p",
        "HOPPER_TARGET": "w",
        "HOPPER_BATCH_SIZE": "5",
        "HOPPER_INCLUDE": '["*.csv"]',
    }
    scheduled = {
        "version": "0",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "detail": {},
    }
    options, continuation = options_from_event(scheduled, environ)
    assert options == {
        "source": "s3://bkt-1/p",
        "target": "w",
        "batch_size": "5",
        "include": ["*.csv"],
    }
    assert continuation == {}
    full, _ = options_from_event(
        {"source": "s3://other", "target": "x", "mode": "prefixes"}, environ
    )
    assert (
        full["source"] == "s3://other" and full["mode"] == "prefixes" and full["batch_size"] == "5"
    )


def drive(
    first: dict[str, Any], seconds: float, received: Received, arn: str, limit: int = 60
) -> list[dict[str, Any]]:
    """Invoke the handler, then each continuation it hands on to itself, as Lambda would."""
    seen = len(received.to(arn))  # continuations of earlier chains
    results = [handler(first, Context(seconds, arn))]
    while results[-1]["continued"]:
        handed = received.to(arn)
        assert len(handed) == seen + 1, "exactly one continuation per hop"
        event = handed[seen]
        seen += 1
        results.append(handler(event, Context(seconds, arn)))
        assert len(results) < limit
    return results


@pytest.fixture
def slow_invokes(moto_session: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """5 ms of network latency per invoke, so a hop's budget holds a predictable share."""

    def latency(**_: Any) -> None:
        time.sleep(0.005)

    moto_session.events.register_first("before-send.lambda.Invoke", latency)
    monkeypatch.setattr("hopper.aws.make_session", lambda **_: moto_session)


@pytest.mark.slow
def test_continuation_hands_on_the_cursor_and_loses_nothing(
    moto_session: Any,
    bucket: str,
    function: str,
    role: str,
    received: Received,
    monkeypatch: pytest.MonkeyPatch,
    slow_invokes: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = [f"k/{i:05}" for i in range(400)]
    put(moto_session, bucket, keys)
    arn = create_function(moto_session, "hopper", role)
    monkeypatch.setenv("HOPPER_SAFETY_MARGIN", "0.3")
    first = {"source": f"s3://{bucket}", "target": function, "concurrency": 2}
    # A tiny budget forces several hops: each hop dispatches what fits, then hands on.
    results = drive(first, 0.9, received, arn)
    # 400 invokes at 5 ms, two at a time, cannot fit in one 0.6 s budget.
    assert len(results) >= 2, [r["dispatched"] for r in results]
    assert len({r["run_id"] for r in results}) == 1
    assert [r["hop"] for r in results] == list(range(len(results)))
    delivered = Counter(received.keys(function))
    assert set(delivered) == set(keys)
    # Repeats are bounded by the in-flight window at each hand-over.
    assert sum(delivered.values()) - len(keys) <= 2 * len(results)
    assert results[-1]["status"] == "succeeded"
    assert all(e["continuation"]["run_id"] == results[0]["run_id"] for e in received.to(arn))
    # One metrics line per hop, counting that hop's items; only the last says the run finished.
    out = capsys.readouterr().out.splitlines()
    metrics = [json.loads(line) for line in out if '"_aws"' in line]
    assert [m["RunsFinished"] for m in metrics] == [0] * (len(results) - 1) + [1]
    assert [m["ItemsDispatched"] for m in metrics] == [r["dispatched"] for r in results]


def test_the_hop_bound_fails_with_a_clear_error(
    moto_session: Any,
    bucket: str,
    function: str,
    role: str,
    received: Received,
    monkeypatch: pytest.MonkeyPatch,
    slow_invokes: None,
) -> None:
    put(moto_session, bucket, [f"k/{i:05}" for i in range(400)])
    arn = create_function(moto_session, "hopper", role)
    monkeypatch.setenv("HOPPER_SAFETY_MARGIN", "0.3")
    monkeypatch.setenv("HOPPER_MAX_HOPS", "0")
    with pytest.raises(HopperError) as caught:
        drive(
            {"source": f"s3://{bucket}", "target": function, "concurrency": 2}, 0.9, received, arn
        )
    assert "stopped after 0 continuation hops (HOPPER_MAX_HOPS)" in str(caught.value)
    # Hop 0 ran and handed on; hop 1 was refused before any work.
    assert len(received.to(arn)) == 1
    assert "resume it with start_after=" in str(caught.value)


def test_with_state_the_handler_keeps_a_ledger_and_flies_single(
    moto_session: Any,
    bucket: str,
    function: str,
    received: Received,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hopper.runstate.lease import Lease
    from hopper.runstate.record import list_runs, report
    from hopper.runstate.store import open_store

    put(moto_session, bucket, [f"d{i}/x.csv" for i in range(4)])
    state = f"s3://{bucket}/_hopper/state"
    monkeypatch.setenv("HOPPER_STATE", state)
    monkeypatch.setenv("HOPPER_INCREMENTAL", "true")
    first = handler({"source": f"s3://{bucket}", "target": function}, Context(60))
    assert first["status"] == "succeeded" and first["dispatched"] == 4
    store = open_store(state)
    [run] = list_runs(store)
    assert report(store, run["run_id"])["ledger"]["items"]["dispatched"] == 4
    # Nothing changed: the next tick sends nothing; hopper's own state is never listed.
    second = handler({"source": f"s3://{bucket}", "target": function}, Context(60))
    assert second["dispatched"] == 0 and second["unchanged"] == 4 and second["listed"] == 4
    other = Lease(store, "another-invocation")
    other.acquire()
    try:
        skipped = handler({"source": f"s3://{bucket}", "target": function}, Context(60))
    finally:
        other.release()
    assert skipped["status"] == "skipped" and "another-invocation" in skipped["reason"]
    assert len(received.to(function)) == 4


@pytest.mark.slow
def test_incremental_hops_pass_unchanged_items_and_reach_new_ones_at_the_end(
    moto_session: Any,
    bucket: str,
    function: str,
    role: str,
    received: Received,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cursor passes unchanged items too: a hop that sends nothing still hands on while
    the listing is not done, so new keys at the end of a large bucket are reached."""

    def slow_pages(request: Any, **_: Any) -> None:
        # The source's pages only: the state's own listings stay quick.
        if "_hopper" not in request.url:
            time.sleep(0.5)

    monkeypatch.setattr("hopper.aws.make_session", lambda **_: moto_session)
    keys = [f"k/{i:05}" for i in range(3000)]
    put(moto_session, bucket, keys)
    arn = create_function(moto_session, "hopper", role)
    monkeypatch.setenv("HOPPER_SAFETY_MARGIN", "0.3")
    monkeypatch.setenv("HOPPER_STATE", f"s3://{bucket}/_hopper/state")
    monkeypatch.setenv("HOPPER_INCREMENTAL", "true")
    first = {
        "source": f"s3://{bucket}",
        "target": function,
        "concurrency": 8,
        "list_parallelism": 1,
    }

    def chain(seconds: float) -> tuple[list[dict[str, Any]], Counter[str]]:
        before = Counter(received.keys(function))
        results = drive(first, seconds, received, arn, limit=400)
        return results, Counter(received.keys(function)) - before

    sent, delivered = chain(60)
    assert set(delivered) == set(keys) and sent[-1]["status"] == "succeeded"
    moto_session.events.register_first("before-send.s3.ListObjectsV2", slow_pages)
    # Nothing changed: each hop of the second chain sends nothing, yet hands on until the
    # listing is done (three 0.5 s pages, one after another, do not fit one 1.3 s budget).
    unchanged, delivered = chain(1.6)
    assert delivered == Counter()
    assert len(unchanged) >= 2, [r["unchanged"] for r in unchanged]
    assert sum(r["unchanged"] for r in unchanged) >= len(keys)
    assert all(r["dispatched"] == 0 for r in unchanged)
    new = [f"z/{i:03}" for i in range(25)]
    put(moto_session, bucket, new)
    third, delivered = chain(1.6)
    assert delivered == Counter(new)
    assert third[-1]["status"] == "succeeded"
