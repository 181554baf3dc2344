"""Fault injection through botocore's `before-send` hook: the request never leaves botocore."""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.exceptions import ConnectionClosedError, EndpointConnectionError

FAULT_HEADER = "x-hopper-test-fault"


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body

    def read(self, *_: Any) -> bytes:
        body, self._body = self._body, b""
        return body


def response(
    url: str,
    status: int,
    code: str | None,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> AWSResponse:
    all_headers = {"Content-Type": "application/json", "x-amzn-RequestId": "fault-injected"}
    if code:
        all_headers["x-amzn-ErrorType"] = code
    all_headers.update(headers or {})
    return AWSResponse(url, status, all_headers, _Raw(json.dumps(body).encode()))


def response_xml(url: str, status: int, body: bytes) -> AWSResponse:
    return AWSResponse(url, status, {"Content-Type": "text/xml"}, _Raw(body))


class Faults:
    """Fails a fraction of calls with 429, 5xx or a dropped connection, reproducibly."""

    KINDS = ("429", "500", "502", "reset", "refused")

    def __init__(self, rate: float, *, seed: int = 1, kinds: tuple[str, ...] = KINDS) -> None:
        self.rate = rate
        self.kinds = kinds
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.injected: Counter[str] = Counter()
        self.calls = 0

    def __call__(self, request: Any, **_: Any) -> AWSResponse | None:
        with self.lock:
            self.calls += 1
            if self.rng.random() >= self.rate:
                return None
            kind = self.rng.choice(self.kinds)
            self.injected[kind] += 1
        # botocore still calls moto's own before-send handler after this one answers; the mark
        # lets the emulator-side record drop a request the real service would never have seen.
        request.headers[FAULT_HEADER] = kind
        if kind == "429":
            return response(
                request.url,
                429,
                "TooManyRequestsException",
                {
                    "message": "Rate Exceeded.",
                    "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded",
                },
            )
        if kind in ("500", "502"):
            return response(request.url, int(kind), "ServiceException", {"message": "injected"})
        if kind == "reset":
            raise ConnectionClosedError(endpoint_url=request.url)
        raise EndpointConnectionError(endpoint_url=request.url)
