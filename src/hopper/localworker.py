"""The child side of a local worker process: load the worker once, then serve invocations.

Runs in a fresh (spawned) process, so it imports only the standard library and hopper's own
event module: the same worker file must behave here as it does in the Lambda Python runtime.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import os
import select
import struct
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

Handler = Callable[[Any, Any], Any]
# Seconds between two looks for a "stop" from the parent, inside a chunk.
_STOP_CHECK = 0.001
_LENGTH = struct.Struct("!i")


@dataclass(frozen=True)
class WorkerSpec:
    """Where the worker function lives: a file path or a module name, and the function."""

    function: str
    file: str | None = None
    module: str | None = None
    timeout: float = 60.0
    memory: int = 128

    @property
    def display(self) -> str:
        return f"{self.file or 'python:' + str(self.module)}:{self.function}"

    @property
    def function_name(self) -> str:
        stem = Path(self.file).stem if self.file else str(self.module).rsplit(".", 1)[-1]
        return f"{stem}-{self.function}"


class LambdaContext:
    """The parts of Lambda's context object that worker code uses."""

    function_version = "$LATEST"

    def __init__(self, spec: WorkerSpec, request_id: str, timeout: float) -> None:
        (
            self.function_name,
            self.invoked_function_arn,
            self.log_group_name,
            self.log_stream_name,
        ) = _names(spec)
        self.memory_limit_in_mb = spec.memory
        self.aws_request_id = request_id
        self._deadline = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@functools.lru_cache(maxsize=8)
def _names(spec: WorkerSpec) -> tuple[str, str, str, str]:
    """What a context says of the function; the same for every invocation of one process."""
    name = spec.function_name
    return (
        name,
        f"arn:aws:lambda:local:000000000000:function:{name}",
        f"/aws/lambda/{name}",
        f"local/{os.getpid()}",
    )


def load_handler(spec: WorkerSpec) -> Handler:
    """Import the worker and return its function; raises LookupError with a one-line reason."""
    if spec.file is not None:
        path = Path(spec.file).resolve()
        # Like Lambda's task root: the worker can import modules that sit beside it.
        sys.path.insert(0, str(path.parent))
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        if module_spec is None or module_spec.loader is None:
            raise LookupError(f"{spec.file}: cannot be loaded as a Python file")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[path.stem] = module
        try:
            module_spec.loader.exec_module(module)
        except SyntaxError as exc:
            raise LookupError(f"{spec.file}: SyntaxError at line {exc.lineno}: {exc.msg}") from None
    else:
        sys.path.insert(0, str(Path.cwd()))
        try:
            module = importlib.import_module(str(spec.module))
        except ModuleNotFoundError as exc:
            raise LookupError(f"python:{spec.module}: no module named {exc.name!r}") from None
        except SyntaxError as exc:
            raise LookupError(
                f"python:{spec.module}: SyntaxError in {exc.filename} at line {exc.lineno}: "
                f"{exc.msg}"
            ) from None
    handler = getattr(module, spec.function, None)
    if handler is None:
        raise LookupError(f"{spec.display}: the worker has no function {spec.function!r}")
    if not callable(handler):
        raise LookupError(f"{spec.display}: {spec.function!r} is not a function")
    return handler  # type: ignore[no-any-return]


def serve(conn: Connection, spec: WorkerSpec) -> None:
    """Process entry point. In: ("invoke", [payload, ...], [request_id, ...]), or ("build",
    (run_id, payload JSON, bucket), [task row, ...], [request_id, ...]) whose events this
    process builds itself; out: one frame per invocation, in order: b"o" + result JSON, or
    b"e" + JSON [type, message, trace]; or, after ("stop",) arrives between two
    invocations, b"s" in place of the rest."""
    # Worker output must never reach stdout: with --json, stdout holds one JSON document.
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        handler = load_handler(spec)
    except LookupError as exc:
        conn.send(("load_error", str(exc)))
        return
    except BaseException as exc:  # noqa: BLE001 - any failure at import is the worker's
        conn.send(("load_error", f"{spec.display}: {type(exc).__name__}: {exc}"))
        return
    conn.send(("ready",))
    fd = conn.fileno()
    waiting = select.poll()
    waiting.register(fd, select.POLLIN)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] == "stop":
            continue  # it came after this process had finished the chunk anyway
        events: list[Callable[[], Any]]
        if message[0] == "invoke":
            events = [functools.partial(json.loads, payload) for payload in message[1]]
        elif message[0] == "build":
            run_id, payload, bucket = message[1]
            events = _builders(run_id, payload, bucket, message[2])
        else:
            return
        # One result per invocation, written as it finishes: the parent times each one, and
        # a result written is a result kept, whatever the next invocation does to the process.
        look = 0.0
        for event, request_id in zip(events, message[-1], strict=True):
            now = time.monotonic()
            # Is a "stop" waiting? Asked once per millisecond, not per invocation: the
            # question is a system call, as long as a trivial invocation.
            if now >= look:
                look = now + _STOP_CHECK
                if waiting.poll(0) and conn.recv()[0] == "stop":
                    # The run is stopping: the rest of this chunk is not started.
                    _send(fd, b"s")
                    break
            _send(fd, _invoke(handler, spec, event, request_id))


def _send(fd: int, frame: bytes) -> None:
    """One frame as multiprocessing's Connection writes it (a 4-byte length, then the
    bytes), in one write."""
    data = _LENGTH.pack(len(frame)) + frame
    while data:
        data = data[os.write(fd, data) :]


def _builders(
    run_id: str, payload: str, bucket: str | None, rows: list[Any]
) -> list[Callable[[], Any]]:
    """Each row's event, made by the code that encodes it for Lambda (hopper.event), with a
    payload of its own, as json.loads would give each invocation."""
    from hopper.event import event_from_row

    def build(row: Any) -> Any:
        return event_from_row(row, run_id, json.loads(payload), bucket)

    return [functools.partial(build, row) for row in rows]


def _invoke(handler: Handler, spec: WorkerSpec, event: Callable[[], Any], request_id: str) -> bytes:
    context = LambdaContext(spec, request_id, spec.timeout)
    try:
        result = handler(event(), context)
    except BaseException as exc:  # noqa: BLE001 - reported as the worker's error, like Lambda
        trace = traceback.format_exception(exc)
        return b"e" + json.dumps([type(exc).__name__, str(exc), "".join(trace[-5:])]).encode()
    try:
        return b"o" + json.dumps(result).encode()
    except (TypeError, ValueError) as exc:
        error = ["Runtime.MarshalError", f"result is not JSON serializable: {exc}", ""]
        return b"e" + json.dumps(error).encode()


def main(argv: list[str]) -> None:
    """`python -m hopper.localworker FD`: serve on the socket FD the parent passed."""
    import signal
    from multiprocessing.connection import Connection

    # A terminal's Ctrl-C goes to the whole process group. The parent decides what it means
    # (finish what is in flight, or abort and kill this process); here it would only turn the
    # invocation in progress into a KeyboardInterrupt failure.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(int(argv[1]))
    start = conn.recv()
    # The parent's import path, as spawn would give it: python:MODULE workers resolve alike.
    sys.path[:] = [*start["sys_path"], *(p for p in sys.path if p not in start["sys_path"])]
    serve(conn, WorkerSpec(**start["spec"]))


if __name__ == "__main__":
    main(sys.argv)
