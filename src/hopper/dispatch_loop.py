"""Dispatch from one thread that keeps `concurrency` invokes in flight over non-blocking
connections: for targets with the Multiplexing ability (Lambda on the fast transport).

At thousands of invokes a second, 64 dispatch threads spent more CPU passing the GIL than on
the invokes; one thread waiting on every socket at once does not. The plan is read by a feeder
thread a little ahead (two windows), so a list page that takes 80 ms never stalls the answers
already arriving.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from hopper.batching import Oversize
from hopper.dispatch import Dispatcher, DispatchResult, oversize, unstarted
from hopper.errors import HopperError, Interrupted
from hopper.items import INTERRUPTED, NOT_DISPATCHED, Batch, Outcome
from hopper.target import Stream, Target


class LoopDispatcher(Dispatcher):
    def __init__(self, target: Target, stream: Stream, **rules: Any) -> None:
        super().__init__(target, **rules)
        self.stream = stream

    def run(
        self, plan: Iterable[Batch | Oversize], on_outcome: Callable[[Outcome], None]
    ) -> DispatchResult:
        result = DispatchResult()
        stream = self.stream
        feed = _Feed(iter(plan), max(2 * self.concurrency, 32), stream.wake)
        feed.start()
        crashed: list[BaseException] = []

        def serve() -> None:
            try:
                self._loop(feed, on_outcome, result)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                crashed.append(exc)
            finally:
                feed.close()
                stream.close()

        thread = threading.Thread(target=serve, name="hopper-dispatch", daemon=True)
        # The loop may be waiting on its sockets: wake it to see the halt.
        return self._await([thread], crashed, result, stream.wake)

    def _loop(self, feed: _Feed, report: Callable[[Outcome], None], result: DispatchResult) -> None:
        stream = self.stream
        flying: dict[int, tuple[Batch, int]] = {}
        # (due, token, batch, next attempt): transient failures waiting out their backoff.
        waiting: list[tuple[float, int, Batch, int]] = []
        tokens = itertools.count()
        taking = True

        def begin(batch: Batch, attempt: int) -> None:
            token = next(tokens)
            flying[token] = (batch, attempt)
            stream.start(token, self.recipe.encode(batch, attempt))

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
                        elif isinstance(feed.error, Interrupted):
                            result.stopped = INTERRUPTED
                        elif isinstance(feed.error, HopperError):
                            self._fail(feed.error)
                        else:
                            raise feed.error
                    break
                if isinstance(step, Oversize):
                    report(oversize(step))
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
            report(oversize(step) if isinstance(step, Oversize) else unstarted(step))


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
