"""The dispatcher's own rules, against an in-process target that records what it got."""

import json
import threading
import time
from collections.abc import Callable

from hopper.batching import Oversize
from hopper.dispatch import (
    DISPATCHED,
    FAILED,
    NOT_DISPATCHED,
    Dispatcher,
    DispatchResult,
    Outcome,
    RetryPolicy,
)
from hopper.engine import _Cursor
from hopper.errors import NotFound, TransientError
from hopper.items import Batch, Item
from hopper.targets import InvokeResult

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
    dispatcher = Dispatcher(
        target,
        run_id="r",
        payload={},
        bucket=None,
        concurrency=concurrency,
        retry=FAST,
        deadline_at=deadline_at,
    )
    result = dispatcher.run(plan, outcomes.append)
    return outcomes, result


def test_every_batch_once_and_concurrency_is_bounded() -> None:
    target = Recorder(delay=0.01)
    outcomes, result = dispatch(target, list(batches(40)), concurrency=3)
    assert sorted(o.batch.index for o in outcomes) == list(range(1, 41))
    assert all(o.status == DISPATCHED for o in outcomes)
    assert target.peak <= 3
    assert len(target.calls) == 40
    assert result.exhausted


def test_transient_errors_are_retried_with_a_new_attempt_number() -> None:
    target = Recorder(lambda batch, attempt: TransientError("429") if attempt < 3 else None)
    outcomes, _ = dispatch(target, list(batches(5)))
    assert all(o.status == DISPATCHED and o.attempts == 3 for o in outcomes)
    attempts = sorted((c["hopper"]["batch"], c["hopper"]["attempt"]) for c in target.calls)  # type: ignore[index]
    assert attempts == [(b, a) for b in range(1, 6) for a in (1, 2, 3)]
    keys = {c["hopper"]["idempotency_key"] for c in target.calls if c["hopper"]["batch"] == 1}  # type: ignore[index]
    assert len(keys) == 1


def test_retries_run_out_and_are_reported() -> None:
    target = Recorder(
        lambda batch, attempt: TransientError("503 slow down") if batch == 2 else None
    )
    outcomes, _ = dispatch(target, list(batches(3)))
    failed = [o for o in outcomes if o.status == FAILED]
    assert [o.batch.index for o in failed] == [2]
    assert failed[0].attempts == 4
    assert "gave up after 4 attempts: 503 slow down" in str(failed[0].error)


def test_ambiguous_failures_are_not_repeated_on_unsafe_targets() -> None:
    target = Recorder(lambda batch, attempt: TransientError("read timeout", may_have_run=True))
    target.repeat_safe = False
    outcomes, _ = dispatch(target, list(batches(2)))
    assert all(o.status == FAILED and o.attempts == 1 for o in outcomes)
    assert len(target.calls) == 2
    assert "may already have run" in str(outcomes[0].error)


def test_a_fatal_error_stops_the_run_early() -> None:
    gone = NotFound(
        "Invoke on function f failed: ResourceNotFoundException", operation="Invoke", resource="f"
    )
    target = Recorder(lambda batch, attempt: gone, delay=0.001)
    outcomes, result = dispatch(target, list(batches(500)), concurrency=2)
    assert result.fatal is gone
    # At most the in-flight window was tried, not all 500.
    assert len(target.calls) <= 2
    assert all(o.status == NOT_DISPATCHED for o in outcomes)


def test_worker_failures_fail_their_batch_only() -> None:
    target = Recorder(lambda batch, attempt: "fail" if batch % 2 else None)
    outcomes, result = dispatch(target, list(batches(6)))
    assert sorted(o.batch.index for o in outcomes if o.status == FAILED) == [1, 3, 5]
    assert result.fatal is None


def test_oversize_batches_are_failed_without_a_call() -> None:
    plan: list[Batch | Oversize] = [
        *batches(2),
        Oversize(Batch(3, (Item("big"),)), 2_000_000, 1_048_576),
    ]
    target = Recorder()
    outcomes, _ = dispatch(target, plan)
    assert len(target.calls) == 2
    big = next(o for o in outcomes if o.batch.index == 3)
    assert big.status == FAILED and big.error_type == "PayloadTooLarge"


def test_deadline_stops_pulling_batches() -> None:
    target = Recorder(delay=0.02)
    start = time.monotonic()
    outcomes, result = dispatch(target, list(batches(1000)), concurrency=2, deadline_at=start + 0.2)
    assert result.deadline_reached
    assert not result.exhausted
    assert 0 < len(outcomes) < 1000
    # Settled batches form a contiguous run from the first.
    assert sorted(o.batch.index for o in outcomes) == list(range(1, len(outcomes) + 1))


def test_cursor_follows_the_contiguous_settled_prefix() -> None:
    cursor = _Cursor("start")
    b = batches(5)
    cursor.settle(Outcome(b[1], DISPATCHED))
    assert cursor.key == "start"
    cursor.settle(Outcome(b[0], FAILED))
    assert cursor.key == b[1].last_key
    cursor.settle(Outcome(b[2], NOT_DISPATCHED))
    cursor.settle(Outcome(b[3], DISPATCHED))
    assert cursor.key == b[1].last_key
