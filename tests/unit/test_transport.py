"""The lean transport's signature is botocore's signature, header for header."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from hopper.wire.transport import Signer

URL = "https://lambda.eu-west-1.amazonaws.com/2015-03-31/functions/arn%3Aaws%3Alambda%3Aeu-west-1%3A123456789012%3Afunction%3Aw/invocations"


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 27, 10, 0, 0)

    def __call__(self, *_: Any) -> dt.datetime:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr("botocore.auth.get_current_datetime", clock)
    return clock


def botocore_headers(
    auth_class: type[Any], credentials: Any, service: str, url: str, body: bytes, method: str
) -> dict[str, str]:
    request = AWSRequest(
        method=method, url=url, headers={"X-Amz-Invocation-Type": "Event"}, data=body
    )
    auth_class(credentials.get_frozen_credentials(), service, "eu-west-1").add_auth(request)
    return {k: str(v) for k, v in request.headers.items()}


@pytest.mark.parametrize("token", [None, "session-token/+=="])
def test_signed_headers_equal_botocore_for_every_body_and_second(
    clock: Clock, token: str | None
) -> None:
    credentials = Credentials("AKIDEXAMPLE", "secret/key+", token)
    signer = Signer(credentials, "lambda", "eu-west-1", s3=False)
    bodies = [b"{}", b'{"dataset_prefix":"a"}', '{"k":"ü文"}'.encode(), b""]
    for second in range(3):
        clock.now = dt.datetime(2026, 11, 27, 23, 59, 58) + dt.timedelta(seconds=second)
        for body in bodies:
            ours = signer.sign("POST", URL, {"X-Amz-Invocation-Type": "Event"}, body)
            theirs = botocore_headers(SigV4Auth, credentials, "lambda", URL, body, "POST")
            assert ours == theirs


def test_s3_requests_sign_as_botocore_s3_signer(clock: Clock) -> None:
    credentials = Credentials("AKIDEXAMPLE", "secret", None)
    url = "https://b.s3.eu-west-1.amazonaws.com/?encoding-type=url&list-type=2&prefix=a%20b%2F&start-after=x%2By"
    ours = Signer(credentials, "s3", "eu-west-1", s3=True).sign(
        "GET", url, {"X-Amz-Invocation-Type": "Event"}, b""
    )
    assert ours == botocore_headers(S3SigV4Auth, credentials, "s3", url, b"", "GET")


def test_refreshed_credentials_are_used_from_the_next_request(clock: Clock) -> None:
    class Rotating(Credentials):  # type: ignore[misc]
        def get_frozen_credentials(self) -> Any:
            return Credentials(
                self.access_key, self.secret_key, self.token
            ).get_frozen_credentials()

    credentials = Rotating("OLDKEY", "old-secret", None)
    signer = Signer(credentials, "lambda", "eu-west-1", s3=False)
    headers = {"X-Amz-Invocation-Type": "Event"}
    first = signer.sign("POST", URL, headers, b"{}")
    credentials.access_key, credentials.secret_key = "NEWKEY", "new-secret"
    second = signer.sign("POST", URL, headers, b"{}")
    assert "Credential=OLDKEY/" in first["Authorization"]
    assert "Credential=NEWKEY/" in second["Authorization"]
    assert second == botocore_headers(SigV4Auth, credentials, "lambda", URL, b"{}", "POST")


def test_threads_sign_independently(clock: Clock) -> None:
    credentials = Credentials("AKIDEXAMPLE", "secret", None)
    signer = Signer(credentials, "lambda", "eu-west-1", s3=False)
    errors: list[str] = []

    def work(n: int) -> None:
        for i in range(200):
            body = f'{{"n":{n},"i":{i}}}'.encode()
            ours = signer.sign("POST", URL, {"X-Amz-Invocation-Type": "Event"}, body)
            if ours != botocore_headers(SigV4Auth, credentials, "lambda", URL, body, "POST"):
                errors.append(f"{n}/{i}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
