"""Bounded concurrent dispatch of batches, with retries, a deadline and one outcome per batch.

Batches are pulled from the (lazy) plan only when a slot is free and the deadline has not
passed, so listing never runs ahead of dispatch by more than the in-flight window, and a run
that stops early has settled a contiguous run of batches: the cursor follows from that.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from hopper.batching import Oversize
from hopper.errors import HopperError, TransientError
from hopper.event import encode_event
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
            if self._fatal is not None:
                finished = True
                return []
            stop = self.should_stop() if self.should_stop else None
            if stop:
                result.stopped, finished = stop, True
                return []
            if self._past_deadline():
                result.deadline_reached, finished = True, True
                return []
            chunk: list[Batch] = []
            want = chunking() if chunking is not None else 1
            if self.max_chunk is not None:
                want = min(want, self.max_chunk)
            try:
                while len(chunk) < want:
                    step = next(planned)
                    if isinstance(step, Oversize):
                        report(
                            [
                                Outcome(
                                    step.batch,
                                    FAILED,
                                    error_type="PayloadTooLarge",
                                    error=step.reason,
                                )
                            ]
                        )
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
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        except BaseException:
            # Ctrl-C in the caller: take no more batches, let those in flight settle.
            finished = True
            self._halt.set()
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
        # only what stops the run (the worker cannot be loaded).
        bodies = [self._event(batch, 1) for batch in chunk]

        reported: set[int] = set()

        def answered(index: int, answer: InvokeResult) -> None:
            reported.add(index)
            report([_answered(chunk[index], 1, answer)])

        def keep_going() -> bool:
            if self._halt.is_set() or self._past_deadline():
                return False
            return self.should_stop is None or not self.should_stop()

        try:
            invoke_many(bodies, on_result=answered, keep_going=keep_going)
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
            body = self._event(batch, attempt)
            try:
                answer = self.target.invoke(body)
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
                if self._halt.wait(pause):
                    return Outcome(batch, NOT_DISPATCHED, attempt, error="run stopped")
                continue
            except HopperError as exc:
                self._fail(exc)
                return Outcome(
                    batch, NOT_DISPATCHED, attempt, error_type=type(exc).__name__, error=str(exc)
                )
            except Exception as exc:
                log.exception("batch %d: unexpected error", batch.index)
                return Outcome(
                    batch, FAILED, attempt, error_type=type(exc).__name__, error=str(exc)
                )
            return _answered(batch, attempt, answer)


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
