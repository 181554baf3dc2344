"""hopper over moto: S3 listing to Lambda invokes, read back from the emulator's side."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from hopper import RetryPolicy, RunConfig, run
from hopper.errors import NotFound
from hopper.items import BatchStatus, Outcome
from hopper.lambda_target import LambdaTarget

from ..hooks import OnOutcome
from .conftest import Received
from .faults import FAULT_HEADER, Faults, response

DISPATCHED, FAILED = BatchStatus.DISPATCHED, BatchStatus.FAILED

AWKWARD = [
    "with space/file name.csv",
    "ünïcødé/данные/文件.txt",
    "plus+sign.txt",
    "percent%20literal.txt",
    "amp&and=eq.txt",
    "hash#tag.txt",
    "dots/../up.txt",
    "double//slash.txt",
    "emoji 🚀.json",
    "control\x01char.txt",
    "trailing-folder-marker/",
    "quote\"and'apostrophe.txt",
]


def put_keys(moto_session: Any, bucket: str, n: int) -> list[str]:
    s3 = moto_session.client("s3")
    keys = [f"datasets/{i % 7:02}/part-{i:05}.csv" for i in range(n)] + AWKWARD
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"id\n1\n")
    return keys


def fast_retry(attempts: int = 8) -> RetryPolicy:
    return RetryPolicy(max_attempts=attempts, base=0.001, cap=0.01)


@pytest.mark.slow
def test_every_key_of_a_large_bucket_is_delivered_exactly_once(
    moto_session: Any, bucket: str, function: str, received: Received
) -> None:
    keys = put_keys(moto_session, bucket, 2600)
    summary = run(
        RunConfig(source=f"s3://{bucket}", target=function, concurrency=16), session=moto_session
    )
    assert summary.status == "succeeded", summary.to_dict()
    assert Counter(received.keys()) == Counter(keys)
    assert set(received.invocation_types) == {"Event"}
    assert summary.counts.listed == summary.counts.dispatched == len(keys)
    # Seed compatibility: one item per event, named by dataset_prefix, with the bucket.
    for event in received.events[:50]:
        assert event["dataset_prefix"] == event["items"][0]["key"]
        assert event["bucket"] == bucket
        assert event["items"][0]["etag"]


def test_prefixes_mode_batches_and_start_after(
    moto_session: Any, bucket: str, function: str, received: Received
) -> None:
    put_keys(moto_session, bucket, 70)
    summary = run(
        RunConfig(
            source=f"s3://{bucket}/datasets",
            target=function,
            mode="prefixes",
            batch_size=3,
            start_after="datasets/01/",
        ),
        session=moto_session,
    )
    assert summary.status == "succeeded"
    assert sorted(received.keys()) == [f"datasets/{i:02}/" for i in range(2, 7)]
    assert sorted(len(e["items"]) for e in received.events) == [2, 3]
    assert all("dataset_prefix" not in e for e in received.events if len(e["items"]) > 1)


def test_selection_against_s3(
    moto_session: Any, bucket: str, function: str, received: Received
) -> None:
    put_keys(moto_session, bucket, 30)
    summary = run(
        RunConfig(
            source=f"s3://{bucket}",
            target=function,
            include=("datasets/0[12]/*",),
            exclude=("*-00001.csv",),
            limit=5,
        ),
        session=moto_session,
    )
    assert summary.counts.selected == 5
    assert sorted(received.keys()) == [
        "datasets/01/part-00008.csv",
        "datasets/01/part-00015.csv",
        "datasets/01/part-00022.csv",
        "datasets/01/part-00029.csv",
        "datasets/02/part-00002.csv",
    ]


def test_request_response_collects_results_and_checks_function_error(
    moto_session: Any, bucket: str, function: str, received: Received
) -> None:
    keys = put_keys(moto_session, bucket, 20)
    summary = run(
        RunConfig(
            source=f"s3://{bucket}",
            target=f"lambda:{function}",
            invocation_type="request-response",
            batch_size=4,
        ),
        session=moto_session,
    )
    assert summary.status == "succeeded", summary.failures
    assert set(received.invocation_types) == {"RequestResponse"}
    assert Counter(received.keys()) == Counter(keys)
    # moto's simple backend echoes the event: the result is what the function received.
    first = summary.results[0]["result"]
    assert first["hopper"]["batch"] == 1
    assert [item["key"] for item in first["items"]] == summary.results[0]["keys"]


def test_sync_client_never_retries_and_outwaits_the_function(
    moto_session: Any, function: str
) -> None:
    target = LambdaTarget(function, invocation_type="request-response", session=moto_session)
    target.prepare()
    config = target._client.meta.config
    assert target.function_timeout == 120
    assert config.read_timeout >= 120
    assert config.retries == {"mode": "standard", "total_max_attempts": 1}
    assert target.repeat_safe is False


def test_a_worker_function_error_fails_its_batch_with_the_message(
    moto_session: Any, bucket: str, function: str
) -> None:
    put_keys(moto_session, bucket, 5)

    def function_error(request: Any, **_: Any) -> Any:
        if b"part-00003" in request.body:
            request.headers[FAULT_HEADER] = "function-error"
            return response(
                request.url,
                200,
                None,
                {"errorMessage": "row 7: bad date", "errorType": "ValueError"},
                {"X-Amz-Function-Error": "Unhandled"},
            )
        return None

    moto_session.events.register_first("before-send.lambda.Invoke", function_error)
    summary = run(
        RunConfig(
            source=f"s3://{bucket}/datasets", target=function, invocation_type="request-response"
        ),
        session=moto_session,
    )
    assert summary.status == "failed"
    # Lambda ran the worker, which raised: a worker failure, not a failed dispatch.
    assert summary.counts.worker_failed == 1 and summary.counts.processed == 4
    assert summary.counts.failed == 0 and summary.counts.dispatched == 5
    failure = summary.failures[0]
    assert failure["status"] == "worker_failed"
    assert failure["keys"] == ["datasets/03/part-00003.csv"]
    assert failure["error_type"] == "ValueError"
    assert failure["error"] == "row 7: bad date"
    assert failure["attempts"] == 1


@pytest.mark.parametrize("rate", [0.1, 0.2])
def test_injected_faults_lose_no_item(
    moto_session: Any, bucket: str, function: str, received: Received, rate: float
) -> None:
    keys = put_keys(moto_session, bucket, 400)
    faults = Faults(rate, seed=int(rate * 100))
    moto_session.events.register_first("before-send.lambda.Invoke", faults)
    summary = run(
        RunConfig(source=f"s3://{bucket}", target=function, concurrency=8),
        session=moto_session,
        retry=fast_retry(10),
    )
    assert sum(faults.injected.values()) > 0.5 * rate * len(keys)
    assert set(faults.injected) == set(Faults.KINDS)
    assert summary.status == "succeeded", summary.failures
    # Faults stop the request inside botocore, so each key reached the emulator exactly once.
    assert Counter(received.keys()) == Counter(keys)


def test_items_whose_retries_run_out_are_reported(
    moto_session: Any, bucket: str, function: str, received: Received
) -> None:
    keys = put_keys(moto_session, bucket, 300)
    moto_session.events.register_first("before-send.lambda.Invoke", Faults(0.5, seed=3))
    outcomes: list[Outcome] = []
    summary = run(
        RunConfig(source=f"s3://{bucket}", target=function, concurrency=8),
        session=moto_session,
        retry=fast_retry(2),
        hooks=OnOutcome(outcomes.append),
    )
    failed = [k for o in outcomes if o.status == FAILED for k in o.batch.keys]
    dispatched = [k for o in outcomes if o.status == DISPATCHED for k in o.batch.keys]
    assert failed, "a 50% fault rate with 2 attempts must exhaust some retries"
    assert summary.status == "failed"
    assert summary.counts.failed == len(failed)
    assert Counter(dispatched + failed) == Counter(keys)
    assert Counter(received.keys()) == Counter(dispatched)
    assert all("gave up after 2 attempts" in str(o.error) for o in outcomes if o.status == FAILED)


def test_a_missing_function_stops_before_any_invoke(
    moto_session: Any, bucket: str, received: Received
) -> None:
    put_keys(moto_session, bucket, 5)
    with pytest.raises(NotFound) as caught:
        run(RunConfig(source=f"s3://{bucket}", target="no-such-function"), session=moto_session)
    assert "no-such-function" in str(caught.value)
    assert "GetFunctionConfiguration" in str(caught.value)
    assert received.events == []


def test_a_missing_bucket_stops_the_run_with_one_error(
    moto_session: Any, function: str, received: Received
) -> None:
    summary = run(RunConfig(source="s3://no-such-bucket", target=function), session=moto_session)
    assert summary.status == "failed"
    assert summary.error is not None
    assert "NoSuchBucket" in summary.error and "no-such-bucket" in summary.error
    assert received.events == []


@pytest.mark.parametrize("transport", ["fast", "boto3"])
def test_max_failures_stops_a_lambda_run_without_state(
    moto_session: Any, bucket: str, function: str, received: Received, transport: str
) -> None:
    """--max-failures belongs to the run, not to its state: without --state it still stops."""
    keys = put_keys(moto_session, bucket, 30)
    calls: list[str] = []

    def worker_raises(request: Any, **_: Any) -> Any:
        # The worker's own failure, as Lambda answers a synchronous invoke of a function that
        # raised: 200, X-Amz-Function-Error, and the error as the payload.
        calls.append(request.url)
        request.headers[FAULT_HEADER] = "function-error"
        return response(
            request.url,
            200,
            None,
            {"errorMessage": "cannot parse", "errorType": "ValueError"},
            headers={"X-Amz-Function-Error": "Unhandled"},
        )

    moto_session.events.register_first("before-send.lambda.Invoke", worker_raises)
    summary = run(
        RunConfig(
            source=f"s3://{bucket}",
            target=function,
            invocation_type="request-response",
            concurrency=1,
            max_failures="3",
            transport=transport,
        ),
        session=moto_session,
    )
    assert summary.stopped == "failure threshold crossed: 4 items failed (more than 3)"
    assert summary.status == "failed" and summary.exit_code == 1
    # One invoke at a time: the fourth failure crossed the threshold and nothing more was sent.
    assert len(calls) == 4
    assert summary.counts.worker_failed == 4 and summary.counts.failed == 0
    # What the plan had read ahead is reported, not sent; the rest was never even selected.
    assert summary.counts.not_dispatched == summary.counts.selected - 4
    assert 4 < summary.counts.selected < len(keys)
    assert {f["error_type"] for f in summary.failures if f["status"] == "worker_failed"} == {
        "ValueError"
    }
    assert summary.cursor is not None


def test_lambda_results_print_unicode_as_it_is(
    moto_session: Any, bucket: str, function: str, received: Received
) -> None:
    from click.testing import CliRunner

    from hopper.cli import cli

    moto_session.client("s3").put_object(Bucket=bucket, Key="données/été.csv", Body=b"x")
    result = CliRunner().invoke(
        cli,
        [
            "run", f"s3://{bucket}", "--target", function, "--invocation-type",
            "request-response", "--payload", '{"city": "Zürich"}',
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # moto's Lambda answers with the event it was given: the key and the payload, unescaped.
    [line] = result.stdout.splitlines()
    assert line.startswith("données/été.csv\t")
    assert '"city": "Zürich"' in line and "\\u00" not in line
