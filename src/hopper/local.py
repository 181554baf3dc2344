"""Local mode's target: a Python function `f(event, context)` in a pool of worker processes.

Its own module so that the Lambda handler never loads it. The child side of each process is
hopper.localworker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import os
import queue
import select
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hopper.errors import Interrupted, WorkerLoadError
from hopper.event import EventRecipe, dumps, task_row
from hopper.items import PROCESSED, WORKER_FAILED, Batch
from hopper.localworker import WorkerSpec
from hopper.target import InvokeResult

log = logging.getLogger(__name__)

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
        self._aborted = False

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
        result = self._run([payload], None)[0]
        if result is None:
            raise Interrupted("aborted before the worker finished")
        return result

    def abort(self) -> None:
        """Kill every worker process: the invocations in flight end as not started."""
        self._aborted = True
        with self._lock:
            processes = list(self._all)
        for process in processes:
            if process.process.poll() is None:
                process.process.kill()

    def chunk_size(self) -> int:
        """How many invocations to hand one worker process at once.

        A round trip to a worker process costs about 0.3 ms; tasks much shorter than that
        go in chunks worth about _CHUNK_SECONDS of work, long ones one by one.
        """
        if self._per_task is None:
            return 1
        return max(1, min(_MAX_CHUNK, int(_CHUNK_SECONDS / max(self._per_task, 1e-6))))

    def invoke_chunk(
        self,
        batches: Sequence[Batch],
        recipe: EventRecipe,
        *,
        on_result: Callable[[int, InvokeResult], None],
        keep_going: Callable[[], bool],
    ) -> None:
        """Each batch's first attempt, as its own invocation. The worker processes build the
        events from compact task rows with hopper.event's code, which spares this process
        most of the cost of a short task."""
        rows = [task_row(batch, 1) for batch in batches]
        shared = (recipe.run_id, dumps(recipe.payload).decode("utf-8"), recipe.bucket)
        self._run(rows, shared, on_result=on_result, keep_going=keep_going)

    def _run(
        self,
        tasks: list[Any],
        shared: tuple[str, str, str | None] | None,
        *,
        on_result: Callable[[int, InvokeResult], None] | None = None,
        keep_going: Callable[[], bool] | None = None,
    ) -> list[InvokeResult | None]:
        """Run each task as its own invocation, with its own context and time limit.

        A task is an encoded event; or, with `shared` (run id, payload JSON, bucket), an
        event.task_row that the worker process turns into the event itself.
        `on_result(i, result)` hears of each as it ends; once `keep_going()` turns false the
        invocations not yet started are not started, and come back as None.
        """
        results: list[InvokeResult | None] = [None] * len(tasks)
        at = 0
        stopping = False
        while at < len(tasks) and not stopping and not self._aborted:
            process = self._checkout()
            pending = tasks[at:]
            ids = [self._request_id() for _ in pending]
            message = (
                ("invoke", pending, ids) if shared is None else ("build", shared, pending, ids)
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
                if result is None and self._aborted:
                    # Killed by abort(): this one and the rest count as not started.
                    self._discard(process)
                    alive = None
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
            return InvokeResult(ok=True, request_id=request_id, result=result, worker=PROCESSED)
        kind, text, trace = json.loads(frame[1:])
        if trace:
            log.debug("worker %s raised:\n%s", self.name, trace)
        return InvokeResult(
            ok=True, request_id=request_id, error_type=kind, error=text, worker=WORKER_FAILED
        )

    def _lost(self, process: _Process, request_id: str) -> InvokeResult:
        if process.timed_out:
            self._discard(process)
            return InvokeResult(
                ok=True,
                request_id=request_id,
                error_type="Timeout",
                error=f"Task timed out after {self.spec.timeout:g} seconds",
                worker=WORKER_FAILED,
            )
        # The socket closes as the process dies; wait for it to be reaped to know its code.
        code = process.reap(5)
        self._discard(process)
        return InvokeResult(
            ok=True,
            request_id=request_id,
            error_type="Runtime.ExitError",
            error=f"worker process exited (exit code {code})",
            worker=WORKER_FAILED,
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
