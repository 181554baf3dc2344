"""Bounded concurrent dispatch of batches, with retries, a deadline and one outcome per batch.

Batches are pulled from the (lazy) plan only when a slot is free and the deadline has not
passed, so listing never runs ahead of dispatch by more than the in-flight window, and a run
that stops early has settled a contiguous run of batches: the cursor follows from that.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from hopper.batching import Oversize
from hopper.errors import HopperError, TransientError
from hopper.event import dumps, encode_event, task_row
from hopper.items import Batch
from hopper.targets import InvokeResult, Target

log = logging.getLogger(__name__)

DISPATCHED = "dispatched"
FAILED = "failed"
NOT_DISPATCHED = "not_dispatched"
# The stop reason of a run asked to stop (Ctrl-C): it ends incomplete, to be resumed.
INTERRUPTED = "interrupted"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one batch."""

    batch: Batch
    status: str
    attempts: int = 0
    request_id: str | None = None
    result: Any = None
    error_type: str | None = None
    error: str | None = None

    @property
    def settled(self) -> bool:
        """Dispatched or definitely failed: a resumed run need not look at it again."""
        return self.status != NOT_DISPATCHED


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter (AWS Architecture Blog, 2015)."""

    max_attempts: int = 6
    base: float = 0.1
    cap: float = 10.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.cap, self.base * 2 ** (attempt - 1)))


@dataclass
class DispatchResult:
    """How dispatch ended. `fatal` is the error that stopped the run, if one did."""

    exhausted: bool = False
    deadline_reached: bool = False
    fatal: HopperError | None = None
    stopped: str | None = None


class Dispatcher:
    def __init__(
        self,
        target: Target,
        *,
        run_id: str,
        payload: Mapping[str, Any],
        bucket: str | None,
        concurrency: int,
        deadline_at: float | None = None,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        should_stop: Callable[[], str | None] | None = None,
        max_chunk: int | None = None,
    ) -> None:
        self.target = target
        self.run_id = run_id
        self.payload = payload
        self.bucket = bucket
        self.concurrency = concurrency
        self.deadline_at = deadline_at
        self.retry = retry or RetryPolicy()
        self.clock = clock
        self.should_stop = should_stop
        # Batches handed to a local worker at once; 1 keeps a failure threshold exact, as a
        # worker runs through short tasks faster than their results can be counted.
        self.max_chunk = max_chunk
        self._halt = threading.Event()
        self._fatal: HopperError | None = None

    def _past_deadline(self, margin: float = 0.0) -> bool:
        return self.deadline_at is not None and self.clock() + margin >= self.deadline_at

    def run(
        self, plan: Iterable[Batch | Oversize], on_outcome: Callable[[Outcome], None]
    ) -> DispatchResult:
        """Dispatch every batch of `plan`; `on_outcome` gets each outcome, in any order, one
        call at a time (from the dispatch threads).

        Each of `concurrency` threads takes the next batch from the plan itself, sends it and
        reports it: no hand-over between threads per batch. At thousands of invokes a second
        a producer thread feeding workers through queues spent more CPU on waking threads
        and passing the GIL than on the invokes.
        """
        result = DispatchResult()
        planned: Iterator[Batch | Oversize] = iter(plan)
        open_stream = getattr(self.target, "multiplexer", None)
        stream = open_stream(self.concurrency) if open_stream is not None else None
        if stream is not None:
            return self._run_multiplexed(planned, on_outcome, stream, result)
        take_lock = threading.Lock()
        report_lock = threading.Lock()
        chunking = getattr(self.target, "chunk_size", None)
        crashed: list[BaseException] = []
        finished = False

        def report(outcomes: Iterable[Outcome]) -> None:
            with report_lock:
                for outcome in outcomes:
                    on_outcome(outcome)

        def take() -> list[Batch]:
            """The next chunk of the plan, or [] when dispatch is over. Under take_lock."""
            nonlocal finished
            if finished or crashed:
                return []
            if not self._may_take(result):
                finished = True
                return []
            chunk: list[Batch] = []
            want = chunking() if chunking is not None else 1
            if self.max_chunk is not None:
                want = min(want, self.max_chunk)
            try:
                while len(chunk) < want:
                    step = next(planned)
                    if isinstance(step, Oversize):
                        report([_oversize(step)])
                        continue
                    chunk.append(step)
            except StopIteration:
                result.exhausted, finished = True, True
            except HopperError as exc:
                self._fail(exc)
                finished = True
            return chunk

        def serve() -> None:
            try:
                while True:
                    with take_lock:
                        chunk = take()
                    if not chunk:
                        return
                    self._deliver_chunk(chunk, report)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                crashed.append(exc)
                self._halt.set()

        threads = [
            threading.Thread(target=serve, name="hopper-dispatch", daemon=True)
            for _ in range(self.concurrency)
        ]

        def interrupted() -> None:
            nonlocal finished
            finished = True

        return self._await(threads, crashed, result, interrupted)

    def _await(
        self,
        threads: list[threading.Thread],
        crashed: list[BaseException],
        result: DispatchResult,
        interrupted: Callable[[], None],
    ) -> DispatchResult:
        """Start the dispatch threads and wait for them; re-raise what one of them crashed on.

        On Ctrl-C in the caller, the halt and then `interrupted()` say to start nothing more,
        and the batches in flight settle before the interrupt goes on up.
        """
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        except BaseException:
            self._halt.set()
            interrupted()
            for thread in threads:
                thread.join()
            raise
        if crashed:
            raise crashed[0]
        result.fatal = self._fatal
        return result

    def _fail(self, exc: HopperError) -> None:
        if self._fatal is None:
            self._fatal = exc
        self._halt.set()

    def _event(self, batch: Batch, attempt: int) -> bytes:
        return encode_event(
            batch=batch,
            run_id=self.run_id,
            attempt=attempt,
            payload=self.payload,
            bucket=self.bucket,
        )

    def _deliver_chunk(
        self, chunk: list[Batch], report: Callable[[Iterable[Outcome]], None]
    ) -> None:
        invoke_many = getattr(self.target, "invoke_many", None)
        if invoke_many is None or len(chunk) == 1:
            for batch in chunk:
                report([self._deliver(batch)])
            return
        # Only local targets take chunks; they report every failure as a result and raise
        # only what stops the run (the worker cannot be loaded). Their worker processes build
        # each event from the batch, with the code that encodes it here.
        rows = [task_row(batch, 1) for batch in chunk]
        recipe = (self.run_id, dumps(self.payload).decode("utf-8"), self.bucket)

        reported: set[int] = set()

        def answered(index: int, answer: InvokeResult) -> None:
            reported.add(index)
            report([_answered(chunk[index], 1, answer)])

        def keep_going() -> bool:
            if self._halt.is_set() or self._past_deadline():
                return False
            return self.should_stop is None or not self.should_stop()

        try:
            invoke_many(rows, recipe=recipe, on_result=answered, keep_going=keep_going)
        except HopperError as exc:
            self._fail(exc)
        report(
            Outcome(batch, NOT_DISPATCHED, 0, error="run stopped before this batch started")
            for index, batch in enumerate(chunk)
            if index not in reported
        )

    def _deliver(self, batch: Batch) -> Outcome:
        attempt = 0
        while True:
            attempt += 1
            call = functools.partial(self.target.invoke, self._event(batch, attempt))
            step = self._settle(batch, attempt, call)
            if isinstance(step, Outcome):
                return step
            if self._halt.wait(step):
                return Outcome(batch, NOT_DISPATCHED, attempt, error="run stopped")

    def _settle(
        self, batch: Batch, attempt: int, answer: Callable[[], InvokeResult]
    ) -> Outcome | float:
        """The outcome of one attempt, whose result `answer()` gives or raises; or, when it
        is to be repeated, the pause before the next attempt."""
        try:
            return _answered(batch, attempt, answer())
        except TransientError as exc:
            if exc.may_have_run and not self.target.repeat_safe:
                return Outcome(
                    batch,
                    FAILED,
                    attempt,
                    error_type="Ambiguous",
                    error=f"{exc.message}; not repeated, the worker may already have run",
                )
            if attempt >= self.retry.max_attempts:
                return Outcome(
                    batch,
                    FAILED,
                    attempt,
                    error_type="RetriesExhausted",
                    error=f"gave up after {attempt} attempts: {exc.message}",
                )
            pause = self.retry.delay(attempt)
            if self._past_deadline(pause):
                return Outcome(
                    batch,
                    NOT_DISPATCHED,
                    attempt,
                    error_type="Deadline",
                    error=f"deadline reached while retrying: {exc.message}",
                )
            log.debug("batch %d attempt %d: %s; retrying", batch.index, attempt, exc)
            return pause
        except HopperError as exc:
            self._fail(exc)
            return Outcome(
                batch, NOT_DISPATCHED, attempt, error_type=type(exc).__name__, error=str(exc)
            )
        except Exception as exc:
            log.exception("batch %d: unexpected error", batch.index)
            return Outcome(batch, FAILED, attempt, error_type=type(exc).__name__, error=str(exc))

    def _may_take(self, result: DispatchResult) -> bool:
        """Whether another batch may start; if not, `result` says why."""
        if self._fatal is not None:
            return False
        stop = self.should_stop() if self.should_stop else None
        if stop:
            result.stopped = stop
            return False
        if self._past_deadline():
            result.deadline_reached = True
            return False
        return True

    def _run_multiplexed(
        self,
        planned: Iterator[Batch | Oversize],
        on_outcome: Callable[[Outcome], None],
        stream: Stream,
        result: DispatchResult,
    ) -> DispatchResult:
        """One thread keeps `concurrency` invokes in flight over non-blocking connections.

        The plan is read by a feeder thread a little ahead (two windows), so a list page that
        takes 80 ms never stalls the answers already arriving.
        """
        feed = _Feed(planned, max(2 * self.concurrency, 32), stream.wake)
        feed.start()
        crashed: list[BaseException] = []

        def serve() -> None:
            try:
                self._loop(feed, on_outcome, stream, result)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                crashed.append(exc)
            finally:
                feed.close()
                stream.close()

        thread = threading.Thread(target=serve, name="hopper-dispatch", daemon=True)
        # The loop may be waiting on its sockets: wake it to see the halt.
        return self._await([thread], crashed, result, stream.wake)

    def _loop(
        self,
        feed: _Feed,
        report: Callable[[Outcome], None],
        stream: Stream,
        result: DispatchResult,
    ) -> None:
        flying: dict[int, tuple[Batch, int]] = {}
        # (due, token, batch, next attempt): transient failures waiting out their backoff.
        waiting: list[tuple[float, int, Batch, int]] = []
        tokens = itertools.count()
        taking = True

        def begin(batch: Batch, attempt: int) -> None:
            token = next(tokens)
            flying[token] = (batch, attempt)
            stream.start(token, self._event(batch, attempt))

        while True:
            halted = self._halt.is_set()
            while waiting and not halted and len(flying) < self.concurrency:
                if waiting[0][0] > self.clock():
                    break
                _, _, batch, attempt = heapq.heappop(waiting)
                begin(batch, attempt)
            while taking and len(flying) < self.concurrency:
                if halted or not self._may_take(result):
                    taking = False
                    break
                step = feed.take()
                if step is None:
                    if feed.drained():
                        taking = False
                        if feed.error is None:
                            result.exhausted = True
                        elif isinstance(feed.error, HopperError):
                            self._fail(feed.error)
                        else:
                            raise feed.error
                    break
                if isinstance(step, Oversize):
                    report(_oversize(step))
                    continue
                begin(step, 1)
            if halted:
                for _, _, batch, attempt in waiting:
                    report(Outcome(batch, NOT_DISPATCHED, attempt - 1, error="run stopped"))
                waiting.clear()
            if not flying and not waiting and not taking:
                break
            timeout = 0.1
            if waiting:
                timeout = min(timeout, max(0.0, waiting[0][0] - self.clock()))
            hungry = taking and len(flying) < self.concurrency
            if hungry and feed.want():
                timeout = 0.0
            for token, answer in stream.wait(timeout):
                batch, attempt = flying.pop(token)
                settled = self._settle(batch, attempt, answer)
                if isinstance(settled, Outcome):
                    report(settled)
                else:
                    heapq.heappush(waiting, (self.clock() + settled, token, batch, attempt + 1))
            feed.hungry = False
        # What the feeder read ahead and nothing started: the cursor stops before it.
        feed.close()
        for step in feed.rest():
            if isinstance(step, Oversize):
                report(_oversize(step))
            else:
                report(
                    Outcome(step, NOT_DISPATCHED, 0, error="run stopped before this batch started")
                )


class Stream(Protocol):
    """Invokes in flight from one thread: what a target's `multiplexer(limit)` returns."""

    def start(self, token: int, payload: bytes) -> None: ...

    def wait(self, timeout: float) -> list[tuple[int, Callable[[], InvokeResult]]]: ...

    def wake(self) -> None: ...

    def close(self) -> None: ...


class _Feed:
    """Reads the plan on its own thread, at most `bound` steps ahead of dispatch.

    Steps pass through a deque, whose append and popleft need no lock; the reader sleeps
    when the deque is full, and wakes the dispatch loop only when that loop said it is
    waiting for work (`hungry`).
    """

    def __init__(
        self, plan: Iterator[Batch | Oversize], bound: int, wake: Callable[[], None]
    ) -> None:
        self._plan = plan
        self._bound = bound
        self._wake = wake
        self._steps: deque[Batch | Oversize] = deque()
        self._room = threading.Event()
        self._closing = False
        self.hungry = False
        self.finished = False
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, name="hopper-plan", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _read(self) -> None:
        try:
            for step in self._plan:
                self._steps.append(step)
                if self.hungry:
                    self.hungry = False
                    self._wake()
                if len(self._steps) >= self._bound:
                    self._room.clear()
                    if len(self._steps) >= self._bound:
                        self._room.wait()
                if self._closing:
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the dispatch loop
            self.error = exc
        finally:
            self.finished = True
            self._wake()

    def take(self) -> Batch | Oversize | None:
        """The next step, or None if none is ready (see `finished`)."""
        if not self._steps:
            return None
        step = self._steps.popleft()
        if len(self._steps) <= self._bound // 2 and not self._room.is_set():
            self._room.set()
        return step

    def drained(self) -> bool:
        """The reader is done and every step it read has been taken."""
        # `finished` first: the reader sets it after its last append, so once it reads True
        # the deque holds everything there will be. Read the other way round, a step appended
        # between the two reads would be left behind.
        finished = self.finished
        return finished and not self._steps

    def want(self) -> bool:
        """Says the loop is about to wait for work; True if work (or the end) is already here.
        `finished` is read after the deque, as the reader sets it after its last append."""
        self.hungry = True
        ready = bool(self._steps) or self.finished
        if ready:
            self.hungry = False
        return ready

    def close(self) -> None:
        """Stops the reader and waits for it, so that the plan is no longer in use."""
        self._closing = True
        self._room.set()
        if self._thread.is_alive():
            self._thread.join()

    def rest(self) -> list[Batch | Oversize]:
        steps = list(self._steps)
        self._steps.clear()
        return steps


def _oversize(step: Oversize) -> Outcome:
    return Outcome(step.batch, FAILED, error_type="PayloadTooLarge", error=step.reason)


def _answered(batch: Batch, attempt: int, answer: InvokeResult) -> Outcome:
    if answer.ok:
        return Outcome(
            batch, DISPATCHED, attempt, request_id=answer.request_id, result=answer.result
        )
    return Outcome(
        batch,
        FAILED,
        attempt,
        request_id=answer.request_id,
        error_type=answer.error_type,
        error=answer.error,
    )


class InOrder:
    """Releases settled batches in batch order, holding at most the in-flight window."""

    def __init__(self, release: Callable[[Outcome], None]) -> None:
        self._release = release
        self._next = 1
        self._waiting: dict[int, Outcome] = {}
        self._blocked = False

    def settle(self, outcome: Outcome) -> None:
        if self._blocked:
            return
        self._waiting[outcome.batch.index] = outcome
        while self._next in self._waiting:
            ready = self._waiting.pop(self._next)
            if not ready.settled:
                self._blocked = True
                self._waiting.clear()
                return
            self._release(ready)
            self._next += 1
