"""Dispatch from `concurrency` threads, each taking the next batch (or chunk) and sending it.

Each thread takes from the plan itself, sends and reports: no hand-over between threads per
batch. At thousands of invokes a second a producer thread feeding workers through queues spent
more CPU on waking threads and passing the GIL than on the invokes.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable, Iterator

from hopper.batching import Oversize
from hopper.dispatch import Dispatcher, DispatchResult, answered, oversize, unstarted
from hopper.errors import HopperError, Interrupted
from hopper.items import INTERRUPTED, NOT_DISPATCHED, Batch, Outcome
from hopper.target import Chunking, InvokeResult


class ThreadDispatcher(Dispatcher):
    def run(
        self, plan: Iterable[Batch | Oversize], on_outcome: Callable[[Outcome], None]
    ) -> DispatchResult:
        result = DispatchResult()
        planned: Iterator[Batch | Oversize] = iter(plan)
        take_lock = threading.Lock()
        report_lock = threading.Lock()
        chunking = self.target if isinstance(self.target, Chunking) else None
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
            want = chunking.chunk_size() if chunking is not None else 1
            if self.max_chunk is not None:
                want = min(want, self.max_chunk)
            try:
                while len(chunk) < want:
                    step = next(planned)
                    if isinstance(step, Oversize):
                        report([oversize(step)])
                        continue
                    chunk.append(step)
            except StopIteration:
                result.exhausted, finished = True, True
            except Interrupted:
                # The listing itself stopped for Ctrl-C (an inventory report being read).
                result.stopped, finished = INTERRUPTED, True
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
                    if chunking is not None and len(chunk) > 1:
                        self._deliver_chunk(chunking, chunk, report)
                    else:
                        for batch in chunk:
                            report([self._deliver(batch)])
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

    def _deliver(self, batch: Batch) -> Outcome:
        attempt = 0
        while True:
            attempt += 1
            call = functools.partial(self.target.invoke, self.recipe.encode(batch, attempt))
            step = self._settle(batch, attempt, call)
            if isinstance(step, Outcome):
                return step
            if self._halt.wait(step):
                return Outcome(batch, NOT_DISPATCHED, attempt, error="run stopped")

    def _deliver_chunk(
        self, target: Chunking, chunk: list[Batch], report: Callable[[Iterable[Outcome]], None]
    ) -> None:
        """A chunk to a target that takes chunks: it reports every worker failure as a result
        and raises only what stops the run (the worker cannot be loaded)."""
        reported: set[int] = set()

        def on_result(index: int, answer: InvokeResult) -> None:
            reported.add(index)
            report([answered(chunk[index], 1, answer)])

        def keep_going() -> bool:
            if self._halt.is_set() or self._past_deadline():
                return False
            return self.should_stop is None or not self.should_stop()

        try:
            target.invoke_chunk(chunk, self.recipe, on_result=on_result, keep_going=keep_going)
        except HopperError as exc:
            self._fail(exc)
        report(unstarted(batch) for index, batch in enumerate(chunk) if index not in reported)
