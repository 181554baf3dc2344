"""An AWS Lambda function as a target, by name, `lambda:NAME`, or ARN.

On the fast transport it can also keep many invokes in flight from one thread (Multiplexing,
hopper.target): dispatch then drives its stream, _LambdaStream.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from hopper import aws
from hopper.errors import (
    TransientError,
    aws_errors,
    boto_errors,
    error_code,
    error_message,
    is_fatal_code,
    is_retryable,
    translate,
)
from hopper.items import PROCESSED, WORKER_FAILED
from hopper.target import Answer, InvokeResult
from hopper.wire import transport

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------- Lambda

# Seconds allowed beyond the function's own timeout before a synchronous call gives up.
_READ_MARGIN = 15


class LambdaTarget:
    """An AWS Lambda function, by name, `lambda:NAME`, or ARN."""

    def __init__(
        self,
        function: str,
        *,
        invocation_type: str = "event",
        session: Any = None,
        lambda_client: Any = None,
        max_pool_connections: int = 16,
        transport_name: str = "auto",
    ) -> None:
        self.name = function
        self.invocation_type = invocation_type
        self.synchronous = invocation_type == "request-response"
        # An asynchronous invoke only queues the event, and each carries an idempotency key,
        # so repeating one after an ambiguous failure is safe; a synchronous one is not.
        self.repeat_safe = not self.synchronous
        self.function_timeout: int | None = None
        # A boto3 Session, or the botocore Session the Lambda handler uses.
        self._session = session
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
        with aws_errors("GetFunctionConfiguration", f"function {self.name}"):
            try:
                config = control.get_function_configuration(FunctionName=self.name)
                self.function_timeout = int(config.get("Timeout", 3))
            except boto_errors() as exc:
                # Least-privilege roles may lack GetFunctionConfiguration; async invokes do
                # not need the timeout, so carry on and let the first invoke speak.
                code = error_code(exc)
                if code not in {"AccessDenied", "AccessDeniedException"} or self.synchronous:
                    raise
                log.info("cannot read the configuration of %s; continuing", self.name)
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
            return self._classify(lambda: self._unpack(channel.send(*self.request(payload))))
        return self._classify(lambda: self._invoke_boto3(payload))

    def multiplexer(self, limit: int) -> _LambdaStream | None:
        """Many invokes in flight from one thread (the fast transport only), else None."""
        if self._channel is None:
            return None
        from hopper.wire.mux import Mux

        return _LambdaStream(self, Mux(self._channel, limit))

    def finish(self, answer: transport.Reply | Exception) -> InvokeResult:
        """Judges a multiplexed invoke's answer exactly as invoke() judges its own."""
        return self._classify(lambda: self._unpack(answer))

    def request(self, payload: bytes) -> tuple[str, str, str, dict[str, str], bytes]:
        """The Invoke request for the fast transport: operation, method, URL, headers, body;
        what Channel.send and Mux.start take. Only once prepare() made the channel."""
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
                raise translate(exc, operation="Invoke", resource=f"function {self.name}") from exc
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
                ok=True,
                request_id=request_id,
                error_type=kind or function_error,
                error=message,
                worker=WORKER_FAILED,
            )
        if not self.synchronous:
            # Accepted: the worker runs later, and only a destination record tells how it went.
            return InvokeResult(ok=True, request_id=request_id)
        result: Any = None
        if raw:
            try:
                result = json.loads(raw)
            except ValueError:
                result = raw.decode("utf-8", "replace")
        return InvokeResult(ok=True, request_id=request_id, result=result, worker=PROCESSED)

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
    """Invokes of one LambdaTarget through a Mux: the Stream that dispatch's loop drives."""

    def __init__(self, target: LambdaTarget, mux: Any) -> None:
        self._target = target
        self._mux = mux

    def start(self, token: int, payload: bytes) -> None:
        self._mux.start(token, *self._target.request(payload))

    def wait(self, timeout: float) -> list[tuple[int, Answer]]:
        """The invokes answered since the last call; each answer gives the InvokeResult or
        raises what invoke() would have raised."""
        finish = self._target.finish
        return [
            (token, functools.partial(finish, answer)) for token, answer in self._mux.wait(timeout)
        ]

    def wake(self) -> None:
        self._mux.wake()

    def close(self) -> None:
        self._mux.close()
