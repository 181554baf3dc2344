"""Fixtures on moto's in-process emulator, with the simple (no Docker) Lambda backend.

`received` records every event moto's Lambda backend is handed, so tests read delivery back
from the emulator's side rather than from what hopper believes it sent.
"""

from __future__ import annotations

import io
import json
import threading
import zipfile
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.awslambda_simple.models import LambdaSimpleBackend

from .faults import FAULT_HEADER
from .loopback import Server

REGION = "us-east-1"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")


@pytest.fixture
def moto(aws_env: None) -> Iterator[None]:
    with mock_aws(config={"lambda": {"use_docker": False}}):
        yield


@pytest.fixture
def moto_session(moto: None) -> Any:
    return boto3.session.Session(region_name=REGION)


class Received:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        self.invocation_types: list[str | None] = []
        self.functions: list[str] = []

    def keys(self, function: str | None = None) -> list[str]:
        return [item["key"] for event in self.to(function) for item in event["items"]]

    def to(self, function: str | None) -> list[dict[str, Any]]:
        """Events received by one function (all of them when `function` is None)."""
        return [
            e for e, f in zip(self.events, self.functions, strict=True) if function in (None, f)
        ]


@pytest.fixture
def received(moto: None, monkeypatch: pytest.MonkeyPatch) -> Received:
    record = Received()
    original = LambdaSimpleBackend.invoke

    def recording(
        self: Any,
        function_name: str,
        qualifier: Any,
        body: Any,
        headers: Any,
        response_headers: Any,
    ) -> Any:
        if headers.get(FAULT_HEADER):
            return original(self, function_name, qualifier, body, headers, response_headers)
        with record.lock:
            record.events.append(json.loads(body))
            record.invocation_types.append(headers.get("X-Amz-Invocation-Type"))
            record.functions.append(function_name)
        return original(self, function_name, qualifier, body, headers, response_headers)

    monkeypatch.setattr(LambdaSimpleBackend, "invoke", recording)
    return record


def _zip(source: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", source)
    return buffer.getvalue()


def create_function(session: Any, name: str, role: str, timeout: int = 120) -> str:
    return str(
        session.client("lambda").create_function(
            FunctionName=name,
            Runtime="python3.12",
            Role=role,
            Handler="handler.handler",
            Code={"ZipFile": _zip("def handler(event, context):\n    return event\n")},
            Timeout=timeout,
        )["FunctionArn"]
    )


@pytest.fixture
def role(moto_session: Any) -> str:
    iam = moto_session.client("iam")
    role = iam.create_role(
        RoleName="worker-role",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "lambda.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )["Role"]["Arn"]
    return str(role)


@pytest.fixture
def function(moto_session: Any, role: str) -> str:
    create_function(moto_session, "worker", role)
    return "worker"


@pytest.fixture
def bucket(moto_session: Any) -> str:
    moto_session.client("s3").create_bucket(Bucket="data-bucket")
    return "data-bucket"


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    """A real HTTP endpoint (ThreadedMotoServer) with the simple Lambda backend."""
    import urllib.request

    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    request = urllib.request.Request(
        f"{endpoint}/moto-api/config",
        data=json.dumps({"lambda": {"use_docker": False}}).encode(),
        method="POST",
    )
    urllib.request.urlopen(request, timeout=10).read()
    yield endpoint
    server.stop()


@pytest.fixture
def server_session(
    moto_server: str, aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """A session whose clients all talk to the moto server, reset before each test."""
    import urllib.request

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    urllib.request.urlopen(
        urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"), timeout=10
    ).read()
    yield boto3.session.Session(region_name=REGION)


@pytest.fixture
def server() -> Iterator[Server]:
    """A plain HTTP server on loopback; set `mode` to choose its behaviour."""
    served = Server()
    yield served
    served.close()
