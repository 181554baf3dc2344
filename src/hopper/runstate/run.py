"""A run with state: lease, ledger, checkpoint, resume, incremental and retry, around the
engine's run. hopper.run comes here when config.state is set."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from hopper import aws, engine
from hopper.config import RunConfig
from hopper.engine import RunHooks
from hopper.errors import HopperError, InvalidInput
from hopper.items import LEASE_LOST, Item, Outcome, Page, Stop, StopReason
from hopper.retry import RetryPolicy
from hopper.runstate.incremental import Incremental
from hopper.runstate.lease import Lease
from hopper.runstate.record import (
    RunRecord,
    active_run,
    fingerprint,
    incremental_keys,
    load_run,
    refresh,
    retry_set,
    run_cursor,
)
from hopper.runstate.store import Store, open_store
from hopper.runstate.tracking import Tracking, collect, set_up
from hopper.sources import Source
from hopper.summary import PlanSummary, RunSummary
from hopper.target import Target

log = logging.getLogger(__name__)


class RetrySource:
    """What a run left undone (runstate.record.retry_set), then the rest of its listing
    after its cursor, unless that listing is done."""

    def __init__(
        self,
        inner: Source,
        run_id: str,
        items: list[Item],
        cursor: str | None,
        complete: bool,
    ) -> None:
        self.inner = inner
        self.bucket = inner.bucket
        self.mode = inner.mode
        self.key_root = inner.key_root
        self._run_id = run_id
        self._items = items
        self._cursor = cursor
        self._complete = complete

    def describe(self) -> str:
        return f"{self.inner.describe()} (retry of {self._run_id})"

    def pages(self, start_after: str | None = None) -> Iterator[Page]:
        limit = None if self._complete else self._cursor
        chosen = [
            item
            for item in self._items
            if (limit is None or item.key <= limit)
            and (start_after is None or item.key > start_after)
        ]
        for start in range(0, len(chosen), 1000):
            yield Page(items=tuple(chosen[start : start + 1000]))
        if not self._complete:
            after = max(filter(None, (self._cursor, start_after)), default=None)
            yield from self.inner.pages(after)


def state_inside(source: Source, store: Store) -> str | None:
    """The key prefix under which the state lives, when it lives inside the source's keys."""
    location = store.location.rstrip("/\\") + "/"
    root = source.key_root.replace("\\", "/")
    location = location.replace("\\", "/")
    if location.startswith(root):
        return location[len(root) :]
    return None


class _StateHooks(RunHooks):
    """The state's part of a run: every outcome to the ledger, each cursor move to the
    checkpoint and the incremental state, and a stop when the lease is lost. The caller's own
    hooks are called too."""

    def __init__(
        self,
        outer: RunHooks,
        record: RunRecord,
        lease: Lease,
        incremental: Incremental | None,
    ) -> None:
        self.outer = outer
        self.record = record
        self.lease = lease
        self.incremental = incremental

    def keep(self, item: Item) -> bool:
        if self.incremental is not None and not self.incremental.changed(item):
            return False
        return self.outer.keep(item)

    def should_stop(self) -> Stop | None:
        if self.lease.lost:
            return LEASE_LOST
        return self.outer.should_stop()

    def on_outcome(self, outcome: Outcome) -> None:
        self.record.record(outcome)
        self.outer.on_outcome(outcome)

    def on_advance(self, outcome: Outcome) -> None:
        # The engine's cursor has moved past this batch: checkpoint it, and remember what
        # was dispatched, in key order, for the incremental state.
        self.record.checkpoint(outcome.batch.last_key)
        if self.incremental is not None:
            self.incremental.settled(outcome)
        self.outer.on_advance(outcome)

    def on_progress(self, summary: RunSummary) -> None:
        self.outer.on_progress(summary)


def run_with_state(
    config: RunConfig,
    *,
    session: Any = None,
    hooks: RunHooks | None = None,
    stop: threading.Event | None = None,
    wait: bool = False,
    retry_of: str | None = None,
    source: Source | None = None,
    target: Target | None = None,
    retry: RetryPolicy | None = None,
) -> RunSummary:
    """Run under the state location's lease; resume the job's unfinished run if there is one."""
    if config.state is None:
        raise InvalidInput("a run with state needs --state")
    store = open_store(config.state, session=session)
    source = source or engine.make_source(config, session=session)
    target = target or engine.make_target(config, session=session)
    tracking = None
    if config.results_queue is not None and config.target is not None:
        # Checked before anything is held or invoked: a worker that does not send its
        # outcomes to the queue is bad input.
        tracking = set_up(config.target, config.results_queue, session=session)
    run_id = config.run_id or engine.new_run_id()
    lease = Lease(store, run_id)
    lease.acquire(wait=wait)
    try:
        inside = state_inside(source, store)
        if inside == "":
            raise InvalidInput(f"--state {config.state} is the source itself; keep the state apart")
        hide = (inside,) if inside else ()
        extra: dict[str, Any] = {}
        # A later segment of a run already recorded: how it began, if it is one.
        segment: str | None = None
        active = active_run(store)
        if retry_of is not None:
            items, complete = retry_set(store, retry_of)
            source = RetrySource(source, retry_of, items, run_cursor(store, retry_of), complete)
            extra["retry_of"] = retry_of
        elif config.run_id is None and active and active.get("fingerprint") == fingerprint(config):
            # The last run of this job did not finish (killed, interrupted, out of time).
            run_id = str(active["run_id"])
            config = dataclasses.replace(config, start_after=run_cursor(store, run_id))
            extra["resumed"] = True
            segment = "resumed"
            log.warning("resuming run %s after %r", run_id, config.start_after)
        elif config.run_id is not None and load_run(store, config.run_id) is not None:
            # The Lambda handler's next hop of this run, after the cursor it was handed.
            segment = "continued"
        elif active:
            log.warning(
                "run %s of another job did not finish; starting afresh", active.get("run_id")
            )
        config = dataclasses.replace(config, run_id=run_id)
        lease.run_id = run_id
        record = RunRecord(store, run_id)
        if segment is not None:
            previous = load_run(store, run_id) or {}
            extra["segments"] = int(previous.get("segments", 1)) + 1
        if tracking is not None:
            extra["tracked_by"] = tracking.document()
        record.start(config, **extra)
        if segment is not None:
            # From here on the run sends every item after this cursor again: what an earlier
            # segment recorded past it no longer counts (runstate.record.batch_lines).
            record.note(event=segment, cursor=config.start_after)
        summary = _run(config, record, lease, source, target, hooks, stop, retry, hide)
        summary.segments = int(extra.get("segments", 1))
        if summary.segments > 1 and not _unfinished(summary):
            summary.adopt(refresh(store, run_id))
    finally:
        lease.release()
    if tracking is not None and config.wait_for_workers:
        # Waiting needs no lease: the next run may start meanwhile.
        _wait_for_workers(store, run_id, summary, tracking, config.wait_for_workers, session)
    return summary


def _run(
    config: RunConfig,
    record: RunRecord,
    lease: Lease,
    source: Source,
    target: Target,
    hooks: RunHooks | None,
    stop: threading.Event | None,
    retry: RetryPolicy | None,
    hide: tuple[str, ...],
) -> RunSummary:
    incremental = None
    if config.incremental:
        key, read_from = incremental_keys(record.store, config)
        incremental = Incremental(
            record.store,
            key,
            run_id=record.run_id,
            start_after=config.start_after,
            read_from=read_from,
        )
    try:
        try:
            summary = engine.run(
                config,
                source=source,
                target=target,
                hooks=_StateHooks(hooks or RunHooks(), record, lease, incremental),
                stop=stop,
                retry=retry,
                hide=hide,
            )
        except HopperError as exc:
            # The run could not start (a worker that does not load, a missing function):
            # record why, and leave nothing for the next run to resume.
            record.finish({"status": "failed", "error": str(exc)}, keep_active=False)
            raise
        except BaseException:
            # Aborted (a second Ctrl-C): what was recorded is written, and the run stays
            # active, so that the next one resumes it after its checkpoint.
            record.finish({"status": "incomplete", "stopped": "aborted"}, keep_active=True)
            raise
        if summary.stopped:
            record.note(event="stopped", reason=summary.stopped)
        if incremental is not None:
            end = (
                summary.cursor
                if (not summary.listing_complete or summary.counts.not_dispatched)
                else None
            )
            incremental.commit(end)
        record.finish(summary.to_dict(), keep_active=_unfinished(summary))
        return summary
    finally:
        if incremental is not None:
            incremental.close()


def _unfinished(summary: RunSummary) -> bool:
    """Whether the next run of the job resumes this one: it stopped with a cursor, for a
    reason other than the failure threshold."""
    threshold_stop = (
        summary.stop is not None and summary.stop.reason is StopReason.FAILURE_THRESHOLD
    )
    return summary.cursor is not None and not threshold_stop


# Seconds between two collects while waiting for workers.
_WAIT_STEP = 5.0


def _wait_for_workers(
    store: Store,
    run_id: str,
    summary: RunSummary,
    tracking: Tracking,
    seconds: float,
    session: Any,
) -> None:
    """Collect the run's records until none of its batches is pending, or `seconds` pass."""
    sqs = aws.client(session, "sqs")
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        collect(store, tracking.queue_url, sqs=sqs, budget=max(0.0, min(_WAIT_STEP, left)))
        document = refresh(store, run_id)
        if not document["pending"] or time.monotonic() >= deadline:
            break
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    summary.adopt(document)
    summary.waited = True


class _Unchanged(RunHooks):
    """A plan's view of an incremental job: what the state says has not changed."""

    def __init__(self, incremental: Incremental) -> None:
        self.incremental = incremental

    def keep(self, item: Item) -> bool:
        return self.incremental.changed(item)


def plan_with_state(config: RunConfig, *, session: Any = None) -> PlanSummary:
    """plan() for an incremental job: reads its state, writes nothing, takes no lease."""
    store = open_store(str(config.state), session=session)
    key, read_from = incremental_keys(store, config)
    incremental = Incremental(
        store, key, run_id="plan", start_after=config.start_after, read_from=read_from
    )
    try:
        return engine.plan(config, session=session, hooks=_Unchanged(incremental))
    finally:
        incremental.close()
