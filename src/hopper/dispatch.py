"""Bounded concurrent dispatch of batches, with retries, a deadline and one outcome per batch.

Batches are pulled from the (lazy) plan only when a slot is free and the deadline has not
passed, so listing never runs ahead of dispatch by more than the in-flight window, and a run
that stops early has settled a contiguous run of batches: the cursor follows from that.
"""

from __future__ import annotations

import logging
import queue
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
        self._halt = threading.Event()
        self._fatal: HopperError | None = None

    def _past_deadline(self, margin: float = 0.0) -> bool:
        return self.deadline_at is not None and self.clock() + margin >= self.deadline_at

    def run(
        self, plan: Iterable[Batch | Oversize], on_outcome: Callable[[Outcome], None]
    ) -> DispatchResult:
        """Dispatch every batch of `plan`; `on_outcome` is called in this thread, in any order.

        Long-lived threads take batches from one queue and put outcomes on another: at
        thousands of invokes a second, a Future per batch and `wait()` over the whole window
        cost more CPU than the invoke itself.
        """
        result = DispatchResult()
        planned: Iterator[Batch | Oversize] = iter(plan)
        work: queue.SimpleQueue[list[Batch] | None] = queue.SimpleQueue()
        done: queue.SimpleQueue[list[Outcome]] = queue.SimpleQueue()
        threads: list[threading.Thread] = []
        # Chunks (lists of batches) handed to a thread and not yet back.
        in_flight = 0
        chunking = getattr(self.target, "chunk_size", None)

        def serve() -> None:
            while (chunk := work.get()) is not None:
                done.put(self._deliver_chunk(chunk))

        def settle(outcomes: list[Outcome]) -> None:
            nonlocal in_flight
            in_flight -= 1
            for outcome in outcomes:
                on_outcome(outcome)

        try:
            while True:
                while not done.empty():
                    settle(done.get())
                if in_flight >= self.concurrency:
                    settle(done.get())
                    continue
                if self._fatal is not None:
                    break
                stop = self.should_stop() if self.should_stop else None
                if stop:
                    result.stopped = stop
                    break
                if self._past_deadline():
                    result.deadline_reached = True
                    break
                chunk: list[Batch] = []
                want = chunking() if chunking is not None else 1
                try:
                    while len(chunk) < want:
                        step = next(planned)
                        if isinstance(step, Oversize):
                            on_outcome(
                                Outcome(
                                    step.batch,
                                    FAILED,
                                    error_type="PayloadTooLarge",
                                    error=step.reason,
                                )
                            )
                            if not chunk:
                                continue
                            break
                        chunk.append(step)
                except StopIteration:
                    result.exhausted = True
                except HopperError as exc:
                    self._fail(exc)
                if chunk:
                    if len(threads) <= in_flight:
                        thread = threading.Thread(target=serve, name="hopper-dispatch", daemon=True)
                        thread.start()
                        threads.append(thread)
                    work.put(chunk)
                    in_flight += 1
                if result.exhausted or self._fatal is not None:
                    break
            while in_flight:
                settle(done.get())
        finally:
            for _ in threads:
                work.put(None)
            for thread in threads:
                thread.join()
        result.fatal = self._fatal
        return result

    def _fail(self, exc: HopperError) -> None:
        if self._fatal is None:
            self._fatal = exc
        self._halt.set()

    def _deliver_chunk(self, chunk: list[Batch]) -> list[Outcome]:
        invoke_many = getattr(self.target, "invoke_many", None)
        if invoke_many is None or len(chunk) == 1:
            return [self._deliver(batch) for batch in chunk]
        # Only local targets take chunks; they report every failure as a result and raise
        # only what stops the run (the worker cannot be loaded).
        bodies = [
            encode_event(
                batch=batch, run_id=self.run_id, attempt=1, payload=self.payload, bucket=self.bucket
            )
            for batch in chunk
        ]
        try:
            answers = invoke_many(bodies)
        except HopperError as exc:
            self._fail(exc)
            return [
                Outcome(batch, NOT_DISPATCHED, 1, error_type=type(exc).__name__, error=str(exc))
                for batch in chunk
            ]
        return [_answered(batch, 1, answer) for batch, answer in zip(chunk, answers, strict=True)]

    def _deliver(self, batch: Batch) -> Outcome:
        attempt = 0
        while True:
            attempt += 1
            body = encode_event(
                batch=batch,
                run_id=self.run_id,
                attempt=attempt,
                payload=self.payload,
                bucket=self.bucket,
            )
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
