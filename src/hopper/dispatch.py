"""Dispatch: bounded concurrent sending of batches, with retries, a deadline and one outcome
per batch. This module holds the rules every strategy shares; the strategies are

- hopper.dispatch_threads: `concurrency` threads, each taking the next batch and sending it
  (any target; local targets that take chunks get chunks);
- hopper.dispatch_loop: one thread keeps `concurrency` invokes in flight over non-blocking
  connections (targets with the Multiplexing ability).

Either way batches are taken from the (lazy) plan only when a slot is free and no stop is
due, so a run that stops early has settled a contiguous run of batches, apart from those in
flight or read ahead, which are reported not dispatched: the cursor follows from that.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from hopper.batching import Oversize
from hopper.errors import HopperError, TransientError
from hopper.event import EventRecipe
from hopper.items import DISPATCHED, FAILED, NOT_DISPATCHED, Batch, Outcome, Stop
from hopper.retry import RetryPolicy
from hopper.target import Abortable, InvokeResult, Target

log = logging.getLogger(__name__)


@dataclass
class DispatchResult:
    """How dispatch ended. `fatal` is the error that stopped the run, if one did."""

    exhausted: bool = False
    deadline_reached: bool = False
    fatal: HopperError | None = None
    stopped: Stop | None = None


class Dispatcher:
    """The shared rules: when to take a batch, how one attempt settles, how a run halts."""

    def __init__(
        self,
        target: Target,
        *,
        recipe: EventRecipe,
        concurrency: int,
        deadline_at: float | None = None,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        should_stop: Callable[[], Stop | None] | None = None,
        max_chunk: int | None = None,
    ) -> None:
        self.target = target
        self.recipe = recipe
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

    def run(
        self, plan: Iterable[Batch | Oversize], on_outcome: Callable[[Outcome], None]
    ) -> DispatchResult:
        """Dispatch every batch of `plan`; `on_outcome` gets each outcome, in any order, one
        call at a time (from a dispatch thread)."""
        raise NotImplementedError

    def _past_deadline(self, margin: float = 0.0) -> bool:
        return self.deadline_at is not None and self.clock() + margin >= self.deadline_at

    def _await(
        self,
        threads: list[threading.Thread],
        crashed: list[BaseException],
        result: DispatchResult,
        interrupted: Callable[[], None],
    ) -> DispatchResult:
        """Start the dispatch threads and wait for them; re-raise what one of them crashed on.

        An exception in the caller (a Ctrl-C that aborts: the CLI's second one) halts dispatch:
        `interrupted()` says to start nothing more, a target that can cuts its calls in flight
        short, and every batch settles (those cut short as not dispatched) before the
        exception goes on up.
        """
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        except BaseException:
            self._halt.set()
            interrupted()
            if isinstance(self.target, Abortable):
                self.target.abort()
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

    def _settle(
        self, batch: Batch, attempt: int, answer: Callable[[], InvokeResult]
    ) -> Outcome | float:
        """The outcome of one attempt, whose result `answer()` gives or raises; or, when it
        is to be repeated, the pause before the next attempt."""
        try:
            return answered(batch, attempt, answer())
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
                batch,
                NOT_DISPATCHED,
                attempt,
                error_type=type(exc).__name__,
                error=str(exc),
            )
        except Exception as exc:
            log.exception("batch %d: unexpected error", batch.index)
            return Outcome(batch, FAILED, attempt, error_type=type(exc).__name__, error=str(exc))


def oversize(step: Oversize) -> Outcome:
    """A batch too large to send: failed, never sent."""
    return Outcome(step.batch, FAILED, error_type="PayloadTooLarge", error=step.reason)


def unstarted(batch: Batch) -> Outcome:
    """A batch taken from the plan that the run stopped before sending."""
    return Outcome(batch, NOT_DISPATCHED, 0, error="run stopped before this batch started")


def answered(batch: Batch, attempt: int, answer: InvokeResult) -> Outcome:
    return Outcome(
        batch,
        DISPATCHED if answer.ok else FAILED,
        attempt,
        request_id=answer.request_id,
        result=answer.result,
        error_type=answer.error_type,
        error=answer.error,
        worker=answer.worker,
    )
