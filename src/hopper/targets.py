"""Targets take one encoded event and report what happened: `invoke(payload) -> InvokeResult`.

A target raises TransientError for what may succeed when repeated, a HopperError for what stops
the run (no such function, access denied), and returns a failed InvokeResult for what failed
this batch only (the worker raised, the payload was refused).
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from hopper import aws, transport
from hopper.errors import (
    InvalidInput,
    TransientError,
    error_code,
    error_message,
    is_fatal_code,
    is_retryable,
    translate,
)

if TYPE_CHECKING:
    # Local mode's target, imported when a local target is made: the Lambda handler
    # imports this module and has no use for it.
    from hopper.local import LocalTarget

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InvokeResult:
    ok: bool
    request_id: str | None = None
    result: Any = None
    error_type: str | None = None
    error: str | None = None


class Target(Protocol):
    name: str
    # False when a repeated call after an ambiguous failure could run the worker twice.
    repeat_safe: bool
    returns_results: bool

    def prepare(self) -> None: ...

    def invoke(self, payload: bytes) -> InvokeResult: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------------- Lambda

# Seconds allowed beyond the function's own timeout before a synchronous call gives up.
_READ_MARGIN = 15


class LambdaTarget:
    """An AWS Lambda function, by name, `lambda:NAME`, or ARN."""

    returns_results = False

    def __init__(
        self,
        function: str,
        *,
        invocation_type: str = "event",
        boto3_session: Any = None,
        lambda_client: Any = None,
        max_pool_connections: int = 16,
        transport_name: str = "auto",
    ) -> None:
        self.name = function
        self.invocation_type = invocation_type
        self.synchronous = invocation_type == "request-response"
        self.returns_results = self.synchronous
        # An asynchronous invoke only queues the event, and each carries an idempotency key,
        # so repeating one after an ambiguous failure is safe; a synchronous one is not.
        self.repeat_safe = not self.synchronous
        self.function_timeout: int | None = None
        self._session = boto3_session
        self._client = lambda_client
        self._pool = max_pool_connections
        self._invocation_type = "RequestResponse" if self.synchronous else "Event"
        self.transport = transport.choose(transport_name)
        self._channel: transport.Channel | None = None
        self._url: str | None = None

    def _control_client(self) -> Any:
        if self._client is not None:
            return self._client
        return aws.client(self._session_or_default(), "lambda")

    def _session_or_default(self) -> Any:
        if self._session is None:
            self._session = aws.make_session()
        return self._session

    def prepare(self) -> None:
        """Check the function exists and learn its timeout, which bounds a sync read."""
        control = self._control_client()
        try:
            config = control.get_function_configuration(FunctionName=self.name)
            self.function_timeout = int(config.get("Timeout", 3))
        except aws.boto_errors() as exc:
            code = error_code(exc)
            # Least-privilege roles may lack GetFunctionConfiguration; async invokes do not
            # need the timeout, so carry on and let the first invoke speak.
            if code in {"AccessDenied", "AccessDeniedException"} and not self.synchronous:
                log.info("cannot read the configuration of %s; continuing", self.name)
            else:
                raise translate(
                    exc, operation="GetFunctionConfiguration", resource=f"function {self.name}"
                ) from None
        if self._client is None:
            read_timeout = max(60, (self.function_timeout or 900) + _READ_MARGIN)
            self._client = aws.client(
                self._session_or_default(),
                "lambda",
                # hopper's dispatcher retries invokes itself; botocore must not repeat a call
                # that may already have run (boto3 #883, #1104).
                max_attempts=1,
                read_timeout=read_timeout if self.synchronous else 60,
                max_pool_connections=self._pool,
            )
        if self.transport == "fast":
            self._channel = transport.channel(
                self._client, "lambda", read_timeout=self._client.meta.config.read_timeout
            )
            self._url = (
                f"{self._client.meta.endpoint_url}/2015-03-31/functions/"
                f"{quote(self.name, safe='')}/invocations"
            )

    def invoke(self, payload: bytes) -> InvokeResult:
        if self._channel is not None:
            channel = self._channel
            return self._classify(lambda: self._unpack(channel.send(*self._request(payload))))
        return self._classify(lambda: self._invoke_boto3(payload))

    def multiplexer(self, limit: int) -> _LambdaStream | None:
        """Many invokes in flight from one thread (the fast transport only), else None."""
        if self._channel is None:
            return None
        from hopper.mux import Mux

        return _LambdaStream(self, Mux(self._channel, limit))

    def finish(self, answer: transport.Reply | Exception) -> InvokeResult:
        """Judges a multiplexed invoke's answer exactly as invoke() judges its own."""
        return self._classify(lambda: self._unpack(answer))

    def _request(self, payload: bytes) -> tuple[str, str, str, dict[str, str], bytes]:
        assert self._url is not None
        return (
            "Invoke",
            "POST",
            self._url,
            {"X-Amz-Invocation-Type": self._invocation_type},
            payload,
        )

    def _classify(self, call: Callable[[], tuple[str | None, str | None, bytes]]) -> InvokeResult:
        import botocore.exceptions

        try:
            request_id, function_error, raw = call()
        except botocore.exceptions.ClientError as exc:
            code = error_code(exc)
            if is_retryable(exc):
                reason = exc.response.get("Reason")
                detail = f" ({reason})" if reason else ""
                raise TransientError(f"{code}: {error_message(exc)}{detail}") from None
            if is_fatal_code(code):
                raise translate(exc, operation="Invoke", resource=f"function {self.name}") from None
            return InvokeResult(ok=False, error_type=code, error=error_message(exc))
        except (
            botocore.exceptions.ConnectTimeoutError,
            botocore.exceptions.EndpointConnectionError,
        ) as exc:
            raise TransientError(f"cannot connect: {exc}", may_have_run=False) from None
        except botocore.exceptions.HTTPClientError as exc:
            # A read timeout or a connection dropped after the request went out.
            raise TransientError(f"{type(exc).__name__}: {exc}", may_have_run=True) from None
        if function_error:
            message, kind = _function_error(raw)
            return InvokeResult(
                ok=False, request_id=request_id, error_type=kind or function_error, error=message
            )
        result: Any = None
        if self.synchronous and raw:
            try:
                result = json.loads(raw)
            except ValueError:
                result = raw.decode("utf-8", "replace")
        return InvokeResult(ok=True, request_id=request_id, result=result)

    def _invoke_boto3(self, payload: bytes) -> tuple[str | None, str | None, bytes]:
        response = self._client.invoke(
            FunctionName=self.name, InvocationType=self._invocation_type, Payload=payload
        )
        body = response.get("Payload")
        return (
            response.get("ResponseMetadata", {}).get("RequestId"),
            response.get("FunctionError"),
            body.read() if body is not None else b"",
        )

    def _unpack(self, answer: transport.Reply | Exception) -> tuple[str | None, str | None, bytes]:
        if isinstance(answer, Exception):
            raise answer
        if answer.status >= 300:
            raise transport.client_error(answer, "Invoke")
        return (
            answer.headers.get("x-amzn-requestid"),
            answer.headers.get("x-amz-function-error"),
            answer.body,
        )

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()


def _function_error(raw: bytes) -> tuple[str, str | None]:
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")[:500], None
    if isinstance(body, dict):
        return str(body.get("errorMessage", body))[:2000], body.get("errorType")
    return str(body)[:2000], None


class _LambdaStream:
    """Invokes of one LambdaTarget through a Mux: what Dispatcher's loop drives."""

    def __init__(self, target: LambdaTarget, mux: Any) -> None:
        self._target = target
        self._mux = mux

    def start(self, token: int, payload: bytes) -> None:
        self._mux.start(token, *self._target._request(payload))

    def wait(self, timeout: float) -> list[tuple[int, Callable[[], InvokeResult]]]:
        """The invokes answered since the last call; each thunk gives the InvokeResult or
        raises what invoke() would have raised."""
        finish = self._target.finish
        return [
            (token, functools.partial(finish, answer)) for token, answer in self._mux.wait(timeout)
        ]

    def wake(self) -> None:
        self._mux.wake()

    def close(self) -> None:
        self._mux.close()


# ----------------------------------------------------------------------------------- parse

_FUNCTION_NAME = r"[A-Za-z0-9_-]{1,140}"
_BARE_RE = re.compile(rf"^{_FUNCTION_NAME}(:(\$LATEST|[A-Za-z0-9_-]{{1,128}}))?$")
_ARN_RE = re.compile(
    rf"^arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]+:\d{{12}}:function:{_FUNCTION_NAME}"
    r"(:(\$LATEST|[A-Za-z0-9_-]{1,128}))?$"
)
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def parse_target(
    text: str,
    *,
    invocation_type: str = "event",
    concurrency: int = 16,
    timeout: float = 60.0,
    memory: int = 128,
    boto3_session: Any = None,
    lambda_client: Any = None,
    transport_name: str = "auto",
) -> LambdaTarget | LocalTarget:
    """`lambda:NAME`, NAME, an ARN, `FILE.py:FUNC` or `python:MODULE:FUNC`."""
    text = text.strip()
    if text.startswith("python:"):
        from hopper.local import LocalTarget
        from hopper.localworker import WorkerSpec

        module, sep, function = text[len("python:") :].rpartition(":")
        if not sep or not _MODULE_RE.match(module) or not _IDENT_RE.match(function):
            raise InvalidInput(f"target {text!r}: use python:MODULE:FUNCTION")
        spec = WorkerSpec(function=function, module=module, timeout=timeout, memory=memory)
        return LocalTarget(spec, processes=concurrency)
    file, sep, function = text.rpartition(":")
    if sep and file.endswith(".py"):
        from hopper.local import LocalTarget
        from hopper.localworker import WorkerSpec

        if not _IDENT_RE.match(function):
            raise InvalidInput(f"target {text!r}: {function!r} is not a Python function name")
        spec = WorkerSpec(function=function, file=file, timeout=timeout, memory=memory)
        return LocalTarget(spec, processes=concurrency)
    if text.endswith(".py"):
        raise InvalidInput(f"target {text!r}: name the function too, as FILE.py:FUNCTION")
    name = text[len("lambda:") :] if text.startswith("lambda:") else text
    if not (_BARE_RE.match(name) or _ARN_RE.match(name)):
        raise InvalidInput(
            f"target {text!r} is not a Lambda function (lambda:NAME, NAME or ARN) "
            "nor a local worker (FILE.py:FUNCTION or python:MODULE:FUNCTION)"
        )
    return LambdaTarget(
        name,
        invocation_type=invocation_type,
        boto3_session=boto3_session,
        lambda_client=lambda_client,
        max_pool_connections=concurrency,
        transport_name=transport_name,
    )
