"""The child side of a local worker process: load the worker once, then serve invocations.

Runs in a fresh (spawned) process, so it imports only the standard library: the same worker
file must behave here as it does in the Lambda Python runtime.
"""

from __future__ import annotations

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

    def __init__(self, spec: WorkerSpec, request_id: str, timeout: float) -> None:
        self.function_name = spec.function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = (
            f"arn:aws:lambda:local:000000000000:function:{self.function_name}"
        )
        self.memory_limit_in_mb = spec.memory
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = f"local/{os.getpid()}"
        self._deadline = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


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
    """Process entry point. Messages in: ("invoke", payload, request_id). Out: see below."""
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
        if message[0] != "invoke":
            return
        _, payload, request_id = message
        conn.send(_invoke(handler, spec, payload, request_id))


def _invoke(handler: Handler, spec: WorkerSpec, payload: bytes, request_id: str) -> tuple[Any, ...]:
    context = LambdaContext(spec, request_id, spec.timeout)
    try:
        event = json.loads(payload)
        result = handler(event, context)
    except BaseException as exc:  # noqa: BLE001 - reported as the worker's error, like Lambda
        trace = traceback.format_exception(exc)
        return ("error", type(exc).__name__, str(exc), "".join(trace[-5:]))
    try:
        encoded = json.dumps(result)
    except (TypeError, ValueError) as exc:
        return ("error", "Runtime.MarshalError", f"result is not JSON serializable: {exc}", "")
    return ("ok", encoded)
