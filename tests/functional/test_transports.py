"""The fast transport and boto3 give the same items, outcomes and errors (moto over HTTP).

Each test runs the same thing on `--transport boto3` and on `--transport fast` against
ThreadedMotoServer, so the fast path goes through real sockets, and compares the two.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

from hopper import RetryPolicy, RunConfig, run
from hopper.errors import AccessDenied, HopperError, NotFound, TransientError
from hopper.items import Item
from hopper.lambda_target import LambdaTarget
from hopper.sources import S3Source
from hopper.wire import transport as lean

from ..hooks import OnOutcome
from .faults import response, response_xml
from .loopback import Server, channel
from .test_s3_to_lambda import AWKWARD

# The module's moto bucket of 1,500 keys takes seconds to fill.
pytestmark = pytest.mark.slow

TRANSPORTS = ("boto3", "fast")


def listed(
    seeded_session: Any, transport: str, bucket: str = "bucket", **options: Any
) -> list[Item]:
    source = S3Source(bucket, session=seeded_session, transport_name=transport, **options)
    return [item for page in source.pages() for item in page.items]


KEYS = sorted([f"data/{i % 5}/part-{i:05}.csv" for i in range(1500)] + AWKWARD)


@pytest.fixture(scope="module")
def shared(moto_server: str) -> Iterator[str]:
    """One bucket of 1512 keys (two pages) and a worker function, made once: moto over HTTP
    runs in this process and takes seconds to take 1500 objects."""
    import urllib.request

    import boto3

    urllib.request.urlopen(
        urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"), timeout=10
    ).read()
    maker = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    s3 = maker.client("s3", endpoint_url=moto_server)
    s3.create_bucket(Bucket="bucket")
    for key in KEYS:
        s3.put_object(Bucket="bucket", Key=key, Body=b"x" * (len(key) % 7))
    iam = maker.client("iam", endpoint_url=moto_server)
    role = iam.create_role(RoleName="r", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    lam = maker.client("lambda", endpoint_url=moto_server)
    lam.create_function(
        FunctionName="worker",
        Runtime="python3.12",
        Role=role,
        Handler="handler.handler",
        Code={"ZipFile": function_zip()},
        Timeout=120,
    )
    yield moto_server


def function_zip() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", "def handler(event, context):\n    return event\n")
    return buffer.getvalue()


@pytest.fixture
def seeded_session(shared: str, aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A session on the shared moto server, which holds the bucket of KEYS and the worker."""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", shared)
    return boto3.session.Session(region_name="us-east-1")


class Senders:
    """Counts the requests each path sent, by the User-Agent the fast transport sets."""

    def __init__(self, seeded_session: Any) -> None:
        self.fast: list[str] = []
        self.boto3: list[str] = []
        seeded_session.events.register("before-send", self)

    def __call__(self, request: Any, **_: Any) -> None:
        fast = "(fast transport)" in str(request.headers.get("User-Agent", ""))
        (self.fast if fast else self.boto3).append(request.url)

    def clear(self) -> None:
        self.fast.clear()
        self.boto3.clear()


def test_listings_are_identical_on_both_transports(seeded_session: Any) -> None:
    senders = Senders(seeded_session)
    plain = listed(seeded_session, "boto3")
    assert senders.fast == [] and len(senders.boto3) == 2
    senders.clear()
    assert listed(seeded_session, "fast", parallelism=1) == plain
    # Every page went the fast way: two pages, and not one request of boto3's own.
    assert len(senders.fast) == 2 and senders.boto3 == []
    assert [item.key for item in plain] == KEYS
    assert all(item.etag and item.last_modified and item.size is not None for item in plain)
    # Ranges listed at once (1512 keys: two pages, one folder listing, probes past the end).
    assert listed(seeded_session, "fast", parallelism=8) == plain

    def from_cursor(transport: str, **options: Any) -> list[Item]:
        source = S3Source(
            "bucket", "data", session=seeded_session, transport_name=transport, **options
        )
        return [item for page in source.pages("data/2/part-01000.csv") for item in page.items]

    assert from_cursor("fast", parallelism=4) == from_cursor("boto3")

    def folders(transport: str) -> list[Item]:
        source = S3Source(
            "bucket",
            "data",
            mode="prefixes",
            session=seeded_session,
            transport_name=transport,
        )
        return [item for page in source.pages("data/1/") for item in page.items]

    assert [item.key for item in folders("fast")] == ["data/2/", "data/3/", "data/4/"]
    assert folders("fast") == folders("boto3")


def test_runs_are_identical_on_both_transports(seeded_session: Any) -> None:
    senders = Senders(seeded_session)
    outcomes = {}
    for transport in TRANSPORTS:
        seen: list[tuple[int, str, tuple[str, ...], list[str]]] = []

        def note(outcome: Any, seen: list[Any] = seen) -> None:
            # The worker echoes its event: its result shows what arrived.
            arrived = [item["key"] for item in outcome.result["items"]]
            seen.append((outcome.batch.index, outcome.status, outcome.batch.keys, arrived))

        summary = run(
            RunConfig(
                source="s3://bucket/data/3",
                target="worker",
                batch_size=7,
                concurrency=8,
                transport=transport,
                invocation_type="request-response",
            ),
            session=seeded_session,
            hooks=OnOutcome(note),
        )
        assert summary.status == "succeeded", summary.to_dict()
        assert all(list(keys) == arrived for _, _, keys, arrived in seen)
        outcomes[transport] = sorted(seen)
    assert outcomes["fast"] == outcomes["boto3"]

    # 43 invokes and one list page each way: the fast run sent none of them through boto3
    # (its boto3 calls are the function's configuration, whose timeout bounds a read).
    def count(urls: list[str], part: str) -> int:
        return sum(1 for url in urls if part in url)

    assert count(senders.fast, "/invocations") == count(senders.boto3, "/invocations") == 43
    assert count(senders.fast, "list-type=2") == count(senders.boto3, "list-type=2") == 1
    assert len(outcomes["fast"]) == 43


def invoke_error(seeded_session: Any, transport: str, answer: Any) -> BaseException:
    """What one invoke raises when `answer(request)` answers it at botocore's before-send."""
    seeded_session.events.register_first("before-send.lambda.Invoke", answer, unique_id="answer")
    try:
        target = LambdaTarget("worker", session=seeded_session, transport_name=transport)
        target.prepare()
        with pytest.raises((HopperError, TransientError)) as caught:
            target.invoke(b"{}")
        target.close()
        return caught.value
    finally:
        seeded_session.events.unregister("before-send.lambda.Invoke", unique_id="answer")


ANSWERS = {
    "throttled": lambda request, **_: response(
        request.url,
        429,
        "TooManyRequestsException",
        {
            "message": "Rate Exceeded.",
            "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded",
        },
    ),
    "service error": lambda request, **_: response(
        request.url, 502, "ServiceException", {"message": "boom"}
    ),
    "plain 500": lambda request, **_: response(request.url, 500, None, {}),
    "access denied": lambda request, **_: response(
        request.url, 403, "AccessDeniedException", {"message": "User is not authorized"}
    ),
    "gone": lambda request, **_: response(
        request.url, 404, "ResourceNotFoundException", {"message": "Function not found: worker"}
    ),
    "unreachable": lambda request, **_: (_ for _ in ()).throw(
        EndpointConnectionError(endpoint_url=request.url)
    ),
    "dropped": lambda request, **_: (_ for _ in ()).throw(
        ConnectionClosedError(endpoint_url=request.url)
    ),
}


@pytest.mark.parametrize("kind", list(ANSWERS))
def test_invoke_errors_map_identically(seeded_session: Any, kind: str) -> None:
    errors = [invoke_error(seeded_session, t, ANSWERS[kind]) for t in TRANSPORTS]
    assert type(errors[0]) is type(errors[1])
    assert str(errors[0]) == str(errors[1])
    assert getattr(errors[0], "may_have_run", None) == getattr(errors[1], "may_have_run", None)
    if kind == "throttled":
        assert "ReservedFunctionConcurrentInvocationLimitExceeded" in str(errors[1])
    if kind == "access denied":
        assert isinstance(errors[1], AccessDenied)
    if kind == "gone":
        assert isinstance(errors[1], NotFound)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            403,
            b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
            AccessDenied,
        ),
        (
            404,
            b"<Error><Code>NoSuchBucket</Code><Message>no bucket</Message><BucketName>bucket</BucketName></Error>",
            NotFound,
        ),
    ],
)
def test_listing_errors_map_identically(
    seeded_session: Any, status: int, body: bytes, expected: type[Exception]
) -> None:
    errors = []
    for transport in TRANSPORTS:
        calls: list[int] = []

        def answer(request: Any, calls: list[int] = calls, **_: Any) -> Any:
            calls.append(1)
            # The second page fails: the first shows the path works, the error must still map.
            return response_xml(request.url, status, body) if len(calls) > 1 else None

        seeded_session.events.register_first("before-send.s3.ListObjectsV2", answer, unique_id="a")
        try:
            with pytest.raises(expected) as caught:
                listed(seeded_session, transport, parallelism=1)
        finally:
            seeded_session.events.unregister("before-send.s3.ListObjectsV2", unique_id="a")
        errors.append(caught.value)
    assert str(errors[0]) == str(errors[1])


def test_a_missing_bucket_is_named_on_both_transports(seeded_session: Any) -> None:
    errors = []
    for transport in TRANSPORTS:
        with pytest.raises(NotFound) as caught:
            listed(seeded_session, transport, "no-such-bucket")
        errors.append(str(caught.value))
    assert errors[0] == errors[1] and "no-such-bucket" in errors[0]


def test_throttled_listing_pages_are_retried(seeded_session: Any) -> None:
    calls = []

    def slow_down(request: Any, **_: Any) -> Any:
        calls.append(1)
        if len(calls) in (2, 3):
            return response_xml(
                request.url,
                503,
                b"<Error><Code>SlowDown</Code><Message>Please reduce</Message></Error>",
            )
        return None

    seeded_session.events.register_first("before-send.s3.ListObjectsV2", slow_down, unique_id="s")
    try:
        items = listed(seeded_session, "fast", parallelism=1)
    finally:
        seeded_session.events.unregister("before-send.s3.ListObjectsV2", unique_id="s")
    assert [item.key for item in items] == KEYS
    assert len(calls) >= 4


# ----------------------------------------------------------------------- real socket faults


def fast_target(seeded_session: Any, endpoint: str) -> LambdaTarget:
    """A fast-path target aimed at `endpoint`, without prepare()'s own call to it."""
    target = LambdaTarget("worker", session=seeded_session, transport_name="fast")
    target._client = seeded_session.client("lambda", endpoint_url=endpoint)
    target._channel = lean.channel(target._client, "lambda", read_timeout=0.5)
    target._url = f"{endpoint}/2015-03-31/functions/worker/invocations"
    return target


def test_real_connection_failures_classify_as_botocore_ones(aws_env: None, server: Server) -> None:
    import boto3

    plain = boto3.session.Session(region_name="us-east-1")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]
    closed.close()

    with pytest.raises(TransientError) as refused:
        fast_target(plain, f"http://127.0.0.1:{dead_port}").invoke(b"{}")
    assert refused.value.may_have_run is False

    server.mode = "drop"
    with pytest.raises(TransientError) as dropped:
        fast_target(plain, f"http://127.0.0.1:{server.port}").invoke(b"{}")
    assert dropped.value.may_have_run is True

    server.mode = "hang"
    channel_target = fast_target(plain, f"http://127.0.0.1:{server.port}")
    with pytest.raises(TransientError) as hung:
        channel_target.invoke(b"{}")
    assert hung.value.may_have_run is True and "ReadTimeoutError" in str(hung.value)
    # Each invoke reached the server once: a call that may have run is never repeated here.
    assert server.requests == [b"{}", b"{}"]


def test_a_request_is_never_sent_twice_after_it_reached_the_server(
    aws_env: None, server: Server
) -> None:
    server.mode = "drop"
    url = f"http://127.0.0.1:{server.port}"
    wire = channel(url, read_timeout=0.5)
    with pytest.raises(ConnectionClosedError):
        wire.send("Invoke", "POST", f"{url}/x", {}, b'{"n": 1}')
    wire.close()
    # The server read the request, then closed without a word: the request may have run, so
    # the channel gave up rather than send it again on a new connection.
    assert server.requests == [b'{"n": 1}']
    assert server.connections == 1


def test_fault_injected_run_dispatches_every_item_on_the_fast_path(seeded_session: Any) -> None:
    from .faults import Faults

    faults = Faults(0.2, kinds=("429", "500", "502", "reset"))
    seeded_session.events.register_first("before-send.lambda.Invoke", faults, unique_id="f")
    try:
        summary = run(
            RunConfig(
                source="s3://bucket/data/0", target="worker", concurrency=8, transport="fast"
            ),
            session=seeded_session,
            retry=RetryPolicy(max_attempts=12, base=0.001, cap=0.01),
        )
    finally:
        seeded_session.events.unregister("before-send.lambda.Invoke", unique_id="f")
    assert sum(faults.injected.values()) > 15
    assert summary.counts.dispatched + summary.counts.failed == summary.counts.selected == 300
    assert summary.counts.failed == 0, summary.failures[:3]


def test_read_timeout_is_a_botocore_read_timeout(aws_env: None, server: Server) -> None:
    server.mode = "hang"
    url = f"http://127.0.0.1:{server.port}"
    wire = channel(url, read_timeout=0.3)
    with pytest.raises(ReadTimeoutError):
        wire.send("Invoke", "POST", f"{url}/x", {}, b"{}")
    wire.close()
    assert server.requests == [b"{}"]


def test_a_bucket_in_another_region_is_listed_through_botocore_redirects(
    seeded_session: Any,
) -> None:
    redirected = []

    def elsewhere(request: Any, **_: Any) -> Any:
        # Only hopper's own requests go to "another region"; boto3's redirector follows.
        if "(fast transport)" not in str(request.headers.get("User-Agent", "")):
            return None
        redirected.append(request.url)
        return response_xml(
            request.url,
            301,
            b"<Error><Code>PermanentRedirect</Code><Message>use the other endpoint</Message>"
            b"<Endpoint>bucket.s3.eu-west-1.amazonaws.com</Endpoint></Error>",
        )

    seeded_session.events.register_first("before-send.s3.ListObjectsV2", elsewhere, unique_id="r")
    try:
        items = listed(seeded_session, "fast")
    finally:
        seeded_session.events.unregister("before-send.s3.ListObjectsV2", unique_id="r")
    assert len(redirected) == 1
    assert [item.key for item in items] == KEYS


def test_the_handler_runs_on_botocore_alone(seeded_session: Any) -> None:
    """The Lambda handler makes its clients from botocore's session: a cold start never
    imports boto3 (and s3transfer with it). Run in a fresh interpreter, against moto."""
    import json
    import os
    import subprocess
    import sys

    code = """
import json, sys
from hopper.handler import handler

class Context:
    function_name = "hopper"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:hopper"
    def get_remaining_time_in_millis(self):
        return 120_000

out = handler({"source": "s3://bucket/data/2", "target": "worker"}, Context())
print(json.dumps({"status": out["status"], "dispatched": out["dispatched"],
                  "boto3": sorted(m for m in sys.modules if m.split(".")[0] in ("boto3", "s3transfer"))}))
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {"status": "succeeded", "dispatched": 300, "boto3": []}


def test_a_listing_that_waits_on_its_pages_lists_key_ranges_at_once(server_session: Any) -> None:
    """The first page waited 60 ms on the endpoint (a before-send hook stands for S3's own
    time), far more than its parsing: the rest is listed in parallel key ranges, and every key
    still comes once, in order."""
    import threading
    import time

    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    from hopper.sources import S3Source

    server_session.client("s3").create_bucket(Bucket="slow-pages")
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    keys = [f"part-{i:05d}.csv" for i in range(4500)]
    for key in keys:  # straight into moto's model: thousands of PUTs over HTTP take seconds
        backend.put_object("slow-pages", key, b"x")
    lock = threading.Lock()
    in_flight = most = 0

    def slow_page(**_: Any) -> None:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        time.sleep(0.06)
        with lock:
            in_flight -= 1

    server_session.events.register_first("before-send.s3.ListObjectsV2", slow_page)
    source = S3Source("slow-pages", session=server_session, transport_name="fast", parallelism=4)
    listed = [item.key for page in source.pages() for item in page.items]
    assert listed == keys
    assert most > 1, "the key ranges were listed one after another"
