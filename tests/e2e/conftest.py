"""ministack, started from its own virtualenv: it really runs Lambda functions and fires rules.

`make test` creates .venv-ministack (ministack pins its own botocore). ministack runs Python
functions with the `python3` first on its PATH, so the venv's bin goes first: its boto3 plays
the part of the one the Lambda runtime provides.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".venv-ministack"
MINISTACK = VENV / "bin" / "ministack"
REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def ministack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not MINISTACK.exists():
        if os.environ.get("HOPPER_REQUIRE_TOOLS"):
            pytest.fail(f"{MINISTACK} is missing; `make test` installs it")
        pytest.skip("ministack is installed by `make test` in .venv-ministack")
    port = _free_port()
    data = tmp_path_factory.mktemp("ministack")
    env = {
        **os.environ,
        "GATEWAY_PORT": str(port),
        "MINISTACK_HOST": "127.0.0.1",
        "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "S3_DATA_DIR": str(data / "s3"),
        "LOG_LEVEL": "WARNING",
        # Lambda retries a failed async invocation after a minute, then two; here after
        # 0.2 s and 0.4 s, so that failure records arrive within the test.
        "LAMBDA_ASYNC_RETRY_BASE_SECONDS": "0.2",
    }
    for name in ("AWS_ENDPOINT_URL", "VIRTUAL_ENV", "PYTHONPATH"):
        env.pop(name, None)
    log = (data / "ministack.log").open("w")
    process = subprocess.Popen(
        [str(MINISTACK)], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=data
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/_ministack/health", timeout=2).read()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"ministack did not start; see {data / 'ministack.log'}")
            time.sleep(0.2)
    yield endpoint
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture
def e2e_env(ministack: str, monkeypatch: pytest.MonkeyPatch) -> str:
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", ministack)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    return ministack


@pytest.fixture
def ministack_session(e2e_env: str) -> Any:
    return boto3.session.Session(region_name=REGION)


def worker_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.write(REPO / "examples" / "worker.py", "worker.py")
    return buffer.getvalue()


def make_world(ministack_session: Any, bucket: str, worker: str | None, markers: str) -> list[str]:
    """The example datasets in S3, and (unless `worker` is None, for a stack that deploys
    its own) the example worker as a real function. Returns the datasets."""
    s3 = ministack_session.client("s3")
    s3.create_bucket(Bucket=bucket)
    datasets = set()
    for path in sorted((REPO / "examples" / "datasets").rglob("*")):
        if path.is_file():
            key = "datasets/" + path.relative_to(REPO / "examples" / "datasets").as_posix()
            s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
            datasets.add(key.split("/")[1])
    if worker is None:
        return sorted(datasets)
    iam = ministack_session.client("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    role = iam.create_role(RoleName=f"{worker}-role", AssumeRolePolicyDocument=json.dumps(trust))[
        "Role"
    ]["Arn"]
    ministack_session.client("lambda").create_function(
        FunctionName=worker,
        Runtime="python3.12",
        Role=role,
        Handler="worker.handler",
        Code={"ZipFile": worker_zip()},
        Timeout=60,
        Environment={"Variables": {"MARKER_PREFIX": markers}},
    )
    return sorted(datasets)


def markers(ministack_session: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    s3 = ministack_session.client("s3")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    keys = [entry["Key"] for page in pages for entry in page.get("Contents", [])]
    return [json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()) for key in keys]


def wait_for_markers(
    ministack_session: Any, bucket: str, prefix: str, count: int, timeout: float
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    found = markers(ministack_session, bucket, prefix)
    while len(found) < count and time.monotonic() < deadline:
        time.sleep(1)
        found = markers(ministack_session, bucket, prefix)
    return found
