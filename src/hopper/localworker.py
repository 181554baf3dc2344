"""The child side of a local worker process: load the worker once, then serve invocations.

Runs in a fresh (spawned) process, so it imports only the standard library: the same worker
file must behave here as it does in the Lambda Python runtime.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

Handler = Callable[[Any, Any], Any]


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
    """Process entry point. In: ("invoke", [payload, ...], [request_id, ...]); out: one
    frame per payload, in order: b"o" + result JSON, or b"e" + JSON [type, message, trace];
    or, after ("stop",) arrives between two invocations, b"s" in place of the rest."""
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
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] == "stop":
            continue  # it came after this process had finished the chunk anyway
        if message[0] != "invoke":
            return
        # One result per invocation, written as it finishes: the parent times each one, and
        # a result written is a result kept, whatever the next invocation does to the process.
        for payload, request_id in zip(message[1], message[2], strict=True):
            if conn.poll(0) and conn.recv()[0] == "stop":
                # The run is stopping: the rest of this chunk is not started.
                conn.send_bytes(b"s")
                break
            conn.send_bytes(_invoke(handler, spec, payload, request_id))


def _invoke(handler: Handler, spec: WorkerSpec, payload: bytes, request_id: str) -> bytes:
    context = LambdaContext(spec, request_id, spec.timeout)
    try:
        event = json.loads(payload)
        result = handler(event, context)
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
    from multiprocessing.connection import Connection

    conn = Connection(int(argv[1]))
    start = conn.recv()
    # The parent's import path, as spawn would give it: python:MODULE workers resolve alike.
    sys.path[:] = [*start["sys_path"], *(p for p in sys.path if p not in start["sys_path"])]
    serve(conn, WorkerSpec(**start["spec"]))


if __name__ == "__main__":
    main(sys.argv)
