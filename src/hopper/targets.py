"""Targets take one encoded event and report what happened: `invoke(payload) -> InvokeResult`.

A target raises TransientError for what may succeed when repeated, a HopperError for what stops
the run (no such function, access denied), and returns a failed InvokeResult for what failed
this batch only (the worker raised, the payload was refused).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import logging
import os
import queue
import re
import select
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from hopper import aws, transport
from hopper.errors import (
    InvalidInput,
    TransientError,
    WorkerLoadError,
    error_code,
    error_message,
    is_fatal_code,
    is_retryable,
    translate,
)

if TYPE_CHECKING:
    # Local mode's module, imported when a local target is made: the Lambda handler
    # imports this module and has no use for it.
    from hopper.localworker import WorkerSpec

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


# ----------------------------------------------------------------------------------- Local

# How long a new worker process may take to import the worker file before hopper gives up.
_LOAD_TIMEOUT = 60.0
# Pipe latency allowance on top of the worker's own timeout.
_IPC_GRACE = 0.5
# Work handed to one worker process at once, when tasks are short.
_CHUNK_SECONDS = 0.02
_MAX_CHUNK = 256
_decode = json.JSONDecoder().decode
# A worker's answer for "stopped before this invocation", as opposed to a result.
_STOPPED = InvokeResult(ok=False, error_type="Stopped")


class _Process:
    """One worker process, serving one invocation at a time over a socket pair."""

    def __init__(self, spec: WorkerSpec) -> None:
        from hopper.spawn import spawn

        self.process, self.conn = spawn("hopper.localworker")
        self.conn.send({"spec": dataclasses.asdict(spec), "sys_path": list(sys.path)})
        self.timed_out = False
        self._frames = bytearray()
        self._at = 0
        self._fd = self.conn.fileno()
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN)

    def next_frame(self, timeout: float) -> bytes | None:
        """The next result frame; None if none came within `timeout` or the process died.

        Reads the socket in large pieces and splits multiprocessing's frames (a 4-byte
        length, then the bytes) here: one read then serves many short invocations. The
        buffer is consumed by an offset, so that a read of thousands of frames is not copied
        once per frame.
        """
        while True:
            frames, at = self._frames, self._at
            if len(frames) - at >= 4:
                (size,) = struct.unpack_from("!i", frames, at)
                if len(frames) - at >= 4 + size:
                    self._at = at + 4 + size
                    return bytes(frames[at + 4 : at + 4 + size])
            # A poll object kept for the process, not conn.poll(): that builds a new selector
            # on every call, which cost more than a trivial invocation once per result.
            try:
                readable = self._poll.poll(max(0.0, timeout) * 1000)
            except (OSError, ValueError):
                return None
            if not readable:
                self.timed_out = True
                return None
            try:
                chunk = os.read(self._fd, 1 << 16)
            except OSError:
                return None
            if not chunk:
                return None
            del frames[:at]
            self._at = 0
            frames += chunk

    def wait_ready(self, spec: WorkerSpec) -> None:
        if not self.conn.poll(_LOAD_TIMEOUT):
            self.kill()
            raise WorkerLoadError(
                f"{spec.display}: the worker did not load within {_LOAD_TIMEOUT}s"
            )
        try:
            message = self.conn.recv()
        except EOFError:
            self.kill()
            raise WorkerLoadError(
                f"{spec.display}: the worker process exited while loading"
            ) from None
        if message[0] == "load_error":
            self.kill()
            raise WorkerLoadError(message[1])

    def reap(self, timeout: float) -> int | None:
        """Wait up to `timeout` for the process to end; its exit code, if it has."""
        import subprocess

        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout)
        code: int | None = self.process.returncode
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.reap(5)
        self.conn.close()


class LocalTarget:
    """A Python function `f(event, context)`, run in a pool of worker processes.

    Each invocation gets a Lambda-like context and the time limit `timeout`; a worker that
    overruns is killed and replaced, and its batch fails with a timeout, as on Lambda.
    """

    repeat_safe = True
    returns_results = True

    def __init__(self, spec: WorkerSpec, *, processes: int = 1) -> None:
        self.spec = spec
        self.name = spec.display
        self._processes = processes
        self._idle: queue.LifoQueue[_Process] = queue.LifoQueue()
        self._all: set[_Process] = set()
        self._lock = threading.Lock()
        # Seconds per invocation, as seen from here (work plus the trip to the process).
        self._per_task: float | None = None
        self._id_prefix = str(uuid.uuid4())[:24]
        self._counter = itertools.count(1)

    def prepare(self) -> None:
        """Start the workers now, together, so a file that does not load fails before any
        dispatch and no invocation waits for a process to start."""
        if self.spec.file is not None:
            path = Path(self.spec.file)
            if not path.is_file():
                raise WorkerLoadError(f"worker file {self.spec.file!r} does not exist")
        started = [self._start() for _ in range(self._processes)]
        try:
            for process in started:
                process.wait_ready(self.spec)
        except WorkerLoadError:
            for process in started:
                self._discard(process)
            raise
        for process in started:
            self._idle.put(process)

    def _start(self) -> _Process:
        process = _Process(self.spec)
        with self._lock:
            self._all.add(process)
        return process

    def _spawn(self) -> _Process:
        process = self._start()
        process.wait_ready(self.spec)
        return process

    def _checkout(self) -> _Process:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            return self._spawn()

    def _discard(self, process: _Process) -> None:
        process.kill()
        with self._lock:
            self._all.discard(process)

    def invoke(self, payload: bytes) -> InvokeResult:
        result = self.invoke_many([payload])[0]
        assert result is not None
        return result

    def chunk_size(self) -> int:
        """How many invocations to hand one worker process at once.

        A round trip to a worker process costs about 0.3 ms; tasks much shorter than that
        go in chunks worth about _CHUNK_SECONDS of work, long ones one by one.
        """
        if self._per_task is None:
            return 1
        return max(1, min(_MAX_CHUNK, int(_CHUNK_SECONDS / max(self._per_task, 1e-6))))

    def invoke_many(
        self,
        tasks: list[Any],
        *,
        recipe: tuple[str, str, str | None] | None = None,
        on_result: Callable[[int, InvokeResult], None] | None = None,
        keep_going: Callable[[], bool] | None = None,
    ) -> list[InvokeResult | None]:
        """Run each task as its own invocation, with its own context and time limit.

        A task is an encoded event; or, with `recipe` (run id, payload JSON, bucket), an
        event.task_row that the worker process turns into the event itself, which spares
        this process most of the cost of a short task.
        `on_result(i, result)` hears of each as it ends; once `keep_going()` turns false the
        invocations not yet started are not started, and come back as None.
        """
        results: list[InvokeResult | None] = [None] * len(tasks)
        at = 0
        stopping = False
        while at < len(tasks) and not stopping:
            process = self._checkout()
            pending = tasks[at:]
            ids = [self._request_id() for _ in pending]
            message = (
                ("invoke", pending, ids) if recipe is None else ("build", recipe, pending, ids)
            )
            started = time.monotonic()
            try:
                process.conn.send(message)
            except (OSError, ValueError):
                self._discard(process)
                continue
            alive: _Process | None = process
            for request_id in ids:
                result = self._receive(process, request_id)
                if result is _STOPPED:
                    break
                if result is None:
                    # The invocation in progress failed (timed out, or its process died) and
                    # the process is gone; the ones after it never started.
                    result, alive = self._lost(process, request_id), None
                results[at] = result
                if on_result is not None:
                    on_result(at, result)
                at += 1
                if alive is None:
                    break
                if not stopping and keep_going is not None and not keep_going():
                    stopping = True
                    with contextlib.suppress(OSError, ValueError):
                        process.conn.send(("stop",))
            if alive is not None:
                self._idle.put(alive)
                self._observe((time.monotonic() - started) / len(ids))
        return results

    def _request_id(self) -> str:
        """A UUID-shaped id, unique per invocation: a random prefix per target and a count.
        uuid4() reads the OS's randomness each time, a tenth of a short task's cost here."""
        return f"{self._id_prefix}{next(self._counter):012x}"

    def _observe(self, per_task: float) -> None:
        previous = self._per_task
        self._per_task = per_task if previous is None else 0.7 * previous + 0.3 * per_task

    def _receive(self, process: _Process, request_id: str) -> InvokeResult | None:
        """The next result from `process`, _STOPPED, or None if it overran or died."""
        frame = process.next_frame(self.spec.timeout + _IPC_GRACE)
        if frame is None:
            return None
        if frame == b"s":
            return _STOPPED
        if frame[:1] == b"o":
            # str, not bytes: json.loads(bytes) first guesses the encoding, in Python.
            result = _decode(frame[1:].decode("utf-8"))
            return InvokeResult(ok=True, request_id=request_id, result=result)
        kind, text, trace = json.loads(frame[1:])
        if trace:
            log.debug("worker %s raised:\n%s", self.name, trace)
        return InvokeResult(ok=False, request_id=request_id, error_type=kind, error=text)

    def _lost(self, process: _Process, request_id: str) -> InvokeResult:
        if process.timed_out:
            self._discard(process)
            return InvokeResult(
                ok=False,
                request_id=request_id,
                error_type="Timeout",
                error=f"Task timed out after {self.spec.timeout:g} seconds",
            )
        # The socket closes as the process dies; wait for it to be reaped to know its code.
        code = process.reap(5)
        self._discard(process)
        return InvokeResult(
            ok=False,
            request_id=request_id,
            error_type="Runtime.ExitError",
            error=f"worker process exited (exit code {code})",
        )

    def close(self) -> None:
        with self._lock:
            processes = list(self._all)
            self._all.clear()
        for process in processes:
            with contextlib.suppress(OSError, ValueError):
                process.conn.send(("exit",))
        for process in processes:
            process.reap(2)
            process.kill()


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
    from hopper.localworker import WorkerSpec

    text = text.strip()
    if text.startswith("python:"):
        module, sep, function = text[len("python:") :].rpartition(":")
        if not sep or not _MODULE_RE.match(module) or not _IDENT_RE.match(function):
            raise InvalidInput(f"target {text!r}: use python:MODULE:FUNCTION")
        spec = WorkerSpec(function=function, module=module, timeout=timeout, memory=memory)
        return LocalTarget(spec, processes=concurrency)
    file, sep, function = text.rpartition(":")
    if sep and file.endswith(".py"):
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
