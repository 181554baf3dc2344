"""The dispatcher's own rules, against an in-process target that records what it got."""

import functools
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from hopper.batching import Oversize, Passed
from hopper.dispatch import DispatchResult
from hopper.dispatch_loop import LoopDispatcher
from hopper.dispatch_threads import ThreadDispatcher
from hopper.engine import Cursor, dispatcher_for
from hopper.errors import AccessDenied, NotFound, TransientError
from hopper.event import EventRecipe
from hopper.items import Batch, BatchStatus, Item, Outcome
from hopper.retry import RetryPolicy
from hopper.target import InvokeResult

DISPATCHED = BatchStatus.DISPATCHED
FAILED = BatchStatus.FAILED
NOT_DISPATCHED = BatchStatus.NOT_DISPATCHED
RECIPE = EventRecipe(run_id="r", payload={}, bucket=None)

FAST = RetryPolicy(max_attempts=4, base=0.001, cap=0.002)


class Recorder:
    """Fails each batch according to `script(batch_index, attempt)`; remembers every call."""

    name = "recorder"
    repeat_safe = True
    returns_results = True

    def __init__(
        self, script: Callable[[int, int], object] | None = None, delay: float = 0.0
    ) -> None:
        self.script = script
        self.delay = delay
        self.calls: list[dict[str, object]] = []
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0

    def prepare(self) -> None:
        pass

    def close(self) -> None:
        pass

    def invoke(self, payload: bytes) -> InvokeResult:
        event = json.loads(payload)
        with self.lock:
            self.calls.append(event)
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            if self.delay:
                time.sleep(self.delay)
            action = (
                self.script(event["hopper"]["batch"], event["hopper"]["attempt"])
                if self.script
                else None
            )
            if isinstance(action, BaseException):
                raise action
            if action == "fail":
                return InvokeResult(ok=False, error_type="ValueError", error="bad row")
            return InvokeResult(ok=True, result={"n": len(event["items"])})
        finally:
            with self.lock:
                self.active -= 1


class Streamed(Recorder):
    """The same recorder, driven by the dispatcher's one-thread loop through `multiplexer()`,
    as the fast Lambda transport is (the Multiplexing ability); its invokes run on a pool so
    that they overlap."""

    def multiplexer(self, limit: int) -> "_PoolStream":
        return _PoolStream(self.invoke, limit)


class _PoolStream:
    def __init__(self, invoke: Callable[[bytes], InvokeResult], limit: int) -> None:
        self.invoke = invoke
        self.pool = ThreadPoolExecutor(limit)
        self.done: queue.Queue[tuple[int, Callable[[], InvokeResult]] | None] = queue.Queue()

    def start(self, token: int, payload: bytes) -> None:
        def call() -> None:
            try:
                answer = self.invoke(payload)
            except Exception as exc:
                self.done.put((token, functools.partial(_raise, exc)))
            else:
                self.done.put((token, lambda: answer))

        self.pool.submit(call)

    def wait(self, timeout: float) -> list[tuple[int, Callable[[], InvokeResult]]]:
        answers = []
        try:
            first = self.done.get(timeout=timeout)
            while True:
                if first is not None:
                    answers.append(first)
                first = self.done.get_nowait()
        except queue.Empty:
            return answers

    def wake(self) -> None:
        self.done.put(None)

    def close(self) -> None:
        self.pool.shutdown()


def _raise(exc: Exception) -> InvokeResult:
    raise exc


# Each target's abilities pick the strategy: every rule runs through both.
STRATEGY = {Recorder: ThreadDispatcher, Streamed: LoopDispatcher}


@pytest.fixture(params=[Recorder, Streamed], ids=["threads", "loop"])
def Target(request: pytest.FixtureRequest) -> type[Recorder]:
    kind: type[Recorder] = request.param
    return kind


def batches(n: int) -> list[Batch]:
    return [Batch(index=i + 1, items=(Item(f"k{i:04}"),)) for i in range(n)]


def dispatch(
    target: Recorder,
    plan: list[Batch | Oversize],
    *,
    concurrency: int = 4,
    deadline_at: float | None = None,
) -> tuple[list[Outcome], DispatchResult]:
    outcomes: list[Outcome] = []
    dispatcher = dispatcher_for(
        target,
        recipe=RECIPE,
        concurrency=concurrency,
        retry=FAST,
        deadline_at=deadline_at,
    )
    assert isinstance(dispatcher, STRATEGY[type(target)])
    result = dispatcher.run(plan, outcomes.append)
    return outcomes, result


def test_every_batch_once_and_concurrency_is_bounded(Target: type[Recorder]) -> None:
    target = Target(delay=0.01)
    outcomes, result = dispatch(target, list(batches(40)), concurrency=3)
    assert sorted(o.batch.index for o in outcomes) == list(range(1, 41))
    assert all(o.status == DISPATCHED for o in outcomes)
    assert target.peak <= 3
    assert len(target.calls) == 40
    assert result.exhausted


def test_transient_errors_are_retried_with_a_new_attempt_number(Target: type[Recorder]) -> None:
    target = Target(lambda batch, attempt: TransientError("429") if attempt < 3 else None)
    outcomes, _ = dispatch(target, list(batches(5)))
    assert all(o.status == DISPATCHED and o.attempts == 3 for o in outcomes)
    attempts = sorted((c["hopper"]["batch"], c["hopper"]["attempt"]) for c in target.calls)  # type: ignore[index]
    assert attempts == [(b, a) for b in range(1, 6) for a in (1, 2, 3)]
    keys = {c["hopper"]["idempotency_key"] for c in target.calls if c["hopper"]["batch"] == 1}  # type: ignore[index]
    assert len(keys) == 1


def test_retries_run_out_and_are_reported(Target: type[Recorder]) -> None:
    target = Target(lambda batch, attempt: TransientError("503 slow down") if batch == 2 else None)
    outcomes, _ = dispatch(target, list(batches(3)))
    failed = [o for o in outcomes if o.status == FAILED]
    assert [o.batch.index for o in failed] == [2]
    assert failed[0].attempts == 4
    assert "gave up after 4 attempts: 503 slow down" in str(failed[0].error)


def test_ambiguous_failures_are_not_repeated_on_unsafe_targets(Target: type[Recorder]) -> None:
    target = Target(lambda batch, attempt: TransientError("read timeout", may_have_run=True))
    target.repeat_safe = False
    outcomes, _ = dispatch(target, list(batches(2)))
    assert all(o.status == FAILED and o.attempts == 1 for o in outcomes)
    assert len(target.calls) == 2
    assert "may already have run" in str(outcomes[0].error)


def test_a_fatal_error_stops_the_run_early(Target: type[Recorder]) -> None:
    gone = NotFound(
        "Invoke on function f failed: ResourceNotFoundException", operation="Invoke", resource="f"
    )
    target = Target(lambda batch, attempt: gone, delay=0.001)
    outcomes, result = dispatch(target, list(batches(500)), concurrency=2)
    assert result.fatal is gone
    # At most the in-flight window was tried, not all 500.
    assert len(target.calls) <= 2
    assert all(o.status == NOT_DISPATCHED for o in outcomes)


def test_worker_failures_fail_their_batch_only(Target: type[Recorder]) -> None:
    target = Target(lambda batch, attempt: "fail" if batch % 2 else None)
    outcomes, result = dispatch(target, list(batches(6)))
    assert sorted(o.batch.index for o in outcomes if o.status == FAILED) == [1, 3, 5]
    assert result.fatal is None


def test_oversize_batches_are_failed_without_a_call(Target: type[Recorder]) -> None:
    plan: list[Batch | Oversize] = [
        *batches(2),
        Oversize(Batch(3, (Item("big"),)), 2_000_000, 1_048_576),
    ]
    target = Target()
    outcomes, _ = dispatch(target, plan)
    assert len(target.calls) == 2
    big = next(o for o in outcomes if o.batch.index == 3)
    assert big.status == FAILED and big.error_type == "PayloadTooLarge"


@pytest.mark.slow
def test_deadline_stops_pulling_batches(Target: type[Recorder]) -> None:
    target = Target(delay=0.05)
    plan: list[Batch | Oversize] = list(batches(1000))
    # A window wide enough that a pause of the test process (a full garbage collection after
    # the functional tests) cannot swallow it, narrow enough that 1000 batches cannot fit.
    start = time.monotonic()
    outcomes, result = dispatch(target, plan, concurrency=2, deadline_at=start + 1.0)
    assert result.deadline_reached
    assert not result.exhausted
    assert 0 < len(outcomes) < 1000
    # Batches that have an outcome form a contiguous run from the first, and so do the
    # settled ones: a batch read ahead but never started is reported, not dispatched.
    assert sorted(o.batch.index for o in outcomes) == list(range(1, len(outcomes) + 1))
    settled = sorted(o.batch.index for o in outcomes if o.settled)
    assert settled and settled == list(range(1, len(settled) + 1))


def test_cursor_follows_the_contiguous_settled_prefix() -> None:
    cursor = Cursor("start")
    b = batches(5)
    cursor.settle(Outcome(b[1], DISPATCHED))
    assert cursor.key == "start"
    cursor.settle(Outcome(b[0], FAILED))
    assert cursor.key == b[1].last_key
    cursor.settle(Outcome(b[2], NOT_DISPATCHED))
    cursor.settle(Outcome(b[3], DISPATCHED))
    assert cursor.key == b[1].last_key


def test_the_cursor_passes_unchanged_items_once_the_batch_before_them_settled() -> None:
    cursor = Cursor(None)
    b = batches(3)
    cursor.passed(Passed("a-unchanged", after=0))  # before any batch: at once
    assert cursor.key == "a-unchanged"
    cursor.passed(Passed("k0000-zz", after=1))  # after batch 1, which has not settled
    assert cursor.key == "a-unchanged"
    cursor.settle(Outcome(b[0], DISPATCHED))
    assert cursor.key == "k0000-zz"
    cursor.passed(Passed("k0001-zz", after=2))
    cursor.settle(Outcome(b[1], NOT_DISPATCHED))  # batch 2 was not sent: the cursor stops
    cursor.settle(Outcome(b[2], DISPATCHED))
    cursor.passed(Passed("k0002-zz", after=3))
    assert cursor.key == "k0000-zz"


def test_a_listing_error_stops_the_run_after_what_was_listed(Target: type[Recorder]) -> None:
    denied = AccessDenied(
        "ListObjectsV2 on bucket b failed: AccessDenied", operation="ListObjectsV2", resource="b"
    )

    def plan() -> Iterator[Batch]:
        yield from batches(3)
        raise denied

    outcomes, result = dispatch(Target(), plan())  # type: ignore[arg-type]
    assert result.fatal is denied
    assert not result.exhausted
    assert sorted(o.batch.index for o in outcomes if o.status == DISPATCHED) == [1, 2, 3]


def test_retries_waiting_when_the_run_halts_are_reported_not_dispatched(
    Target: type[Recorder],
) -> None:
    gone = NotFound("Invoke on function f failed: gone", operation="Invoke", resource="f")

    def script(batch: int, attempt: int) -> object:
        # Batch 1 keeps being throttled; batch 2 then hits an error that stops the run.
        if batch == 1:
            return TransientError("429")
        time.sleep(0.05)
        return gone

    target = Target(script)
    dispatcher = dispatcher_for(
        target,
        recipe=RECIPE,
        concurrency=2,
        retry=RetryPolicy(max_attempts=10, base=5.0, cap=5.0),
    )
    outcomes: list[Outcome] = []
    started = time.monotonic()
    result = dispatcher.run(batches(2), outcomes.append)
    # The five-second backoff was cut short by the halt, and batch 1 was not given up on.
    assert time.monotonic() - started < 4
    assert result.fatal is gone
    first = next(o for o in outcomes if o.batch.index == 1)
    assert first.status == NOT_DISPATCHED and first.error == "run stopped"


def test_the_feed_is_drained_only_once_its_last_step_is_taken() -> None:
    """The loop ends the plan on `drained()`: a reader that finished with a step still queued
    (appended between the loop's take() and its check) must not end it."""
    from hopper.dispatch_loop import _Feed

    plan = batches(2)
    feed = _Feed(iter(plan), bound=8, wake=lambda: None)
    assert feed.take() is None and not feed.drained()
    feed._read()  # the reader thread's whole life, here: both steps queued, then finished
    assert feed.finished
    assert not feed.drained()
    assert feed.take() is plan[0] and not feed.drained()
    assert feed.take() is plan[1] and feed.drained()
