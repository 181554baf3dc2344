"""A run with state: lease, ledger, checkpoint, resume, failure threshold, incremental, retry."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hopper import engine
from hopper.config import RunConfig, parse_threshold
from hopper.dispatch import DISPATCHED, FAILED, INTERRUPTED, Outcome
from hopper.errors import HopperError, InvalidInput
from hopper.items import Page
from hopper.lease import Lease
from hopper.sources import LocalSource, S3Source, Source
from hopper.state import (
    ACTIVE_KEY,
    RUNS,
    Incremental,
    RunRecord,
    fingerprint,
    read_json,
    unsettled_items,
)
from hopper.store import LocalStore, S3Store, Store, open_store
from hopper.summary import RunSummary
from hopper.targets import Target

log = logging.getLogger(__name__)

# A percentage threshold is judged once this many items have settled, not on the first one.
PERCENT_SAMPLE = 20


class Threshold:
    """--max-failures: stop once more than N items, or more than P% of settled items, failed."""

    def __init__(self, text: str | None) -> None:
        self.limit: float | None = None
        self.percent = False
        if text is not None:
            self.limit, self.percent = parse_threshold(text)
        self.failed = 0
        self.settled = 0

    def add(self, outcome: Outcome) -> None:
        if outcome.status in (DISPATCHED, FAILED):
            self.settled += len(outcome.batch.items)
        if outcome.status == FAILED:
            self.failed += len(outcome.batch.items)

    def crossed(self) -> str | None:
        if self.limit is None:
            return None
        if self.percent:
            if self.settled < PERCENT_SAMPLE:
                return None
            share = 100.0 * self.failed / self.settled
            if share > self.limit:
                return f"failure threshold crossed: {self.failed} of {self.settled} items failed ({share:.1f}% > {self.limit:g}%)"
            return None
        if self.failed > self.limit:
            return (
                f"failure threshold crossed: {self.failed} items failed (more than {self.limit:g})"
            )
        return None


class RetrySource:
    """A run's failed and not-dispatched items, then the rest of its listing after its cursor."""

    def __init__(
        self, inner: Source, store: Store, run_id: str, cursor: str | None, complete: bool
    ) -> None:
        self.inner = inner
        self.bucket = inner.bucket
        self.mode = inner.mode
        self._store = store
        self._run_id = run_id
        self._cursor = cursor
        self._complete = complete

    def describe(self) -> str:
        return f"{self.inner.describe()} (retry of {self._run_id})"

    def pages(self, start_after: str | None = None) -> Iterator[Page]:
        limit = None if self._complete else self._cursor
        chosen = [
            item
            for item in unsettled_items(self._store, self._run_id)
            if (limit is None or item.key <= limit)
            and (start_after is None or item.key > start_after)
        ]
        for start in range(0, len(chosen), 1000):
            yield Page(items=tuple(chosen[start : start + 1000]))
        if not self._complete:
            after = max(filter(None, (self._cursor, start_after)), default=None)
            yield from self.inner.pages(after)


def _state_inside(source: Source, store: Store) -> tuple[str, ...]:
    """The key prefix under which the state lives, when it lives inside the source."""
    if isinstance(source, LocalSource) and isinstance(store, LocalStore):
        root, state = Path(source.root), store.root
        if state == root or root in state.parents:
            return (state.relative_to(root).as_posix() + "/",)
    if (
        isinstance(source, S3Source)
        and isinstance(store, S3Store)
        and source.bucket == store.bucket
    ):
        return (store.prefix,) if store.prefix else ("",)
    return ()


def run_with_state(
    config: RunConfig,
    *,
    boto3_session: Any = None,
    wait: bool = False,
    source: Source | None = None,
    target: Target | None = None,
    on_progress: Callable[[RunSummary], None] | None = None,
    stop: threading.Event | None = None,
    retry_of: str | None = None,
) -> RunSummary:
    """Run under the state location's lease; resume the job's unfinished run if there is one."""
    if config.state is None:
        raise InvalidInput("a run with state needs --state")
    store = open_store(config.state, boto3_session=boto3_session)
    source = source or engine.make_source(config, boto3_session=boto3_session)
    target = target or engine.make_target(config, boto3_session=boto3_session)
    run_id = config.run_id or engine.new_run_id()
    lease = Lease(store, run_id)
    lease.acquire(wait=wait)
    try:
        extra: dict[str, Any] = {}
        active = read_json(store, ACTIVE_KEY)
        if retry_of is not None:
            previous = read_json(store, f"{RUNS}{retry_of}/summary.json")
            if previous is None:
                raise InvalidInput(f"no run {retry_of!r} in {store.location}")
            checkpoint = read_json(store, f"{RUNS}{retry_of}/checkpoint.json") or {}
            complete = bool(previous.get("listing_complete"))
            source = RetrySource(source, store, retry_of, checkpoint.get("cursor"), complete)
            extra["retry_of"] = retry_of
        elif config.run_id is None and active and active.get("fingerprint") == fingerprint(config):
            # The last run of this job did not finish (killed, interrupted, out of time).
            checkpoint = read_json(store, f"{RUNS}{active['run_id']}/checkpoint.json") or {}
            run_id = str(active["run_id"])
            config = dataclasses.replace(config, start_after=checkpoint.get("cursor"))
            extra["resumed"] = True
            log.warning("resuming run %s after %r", run_id, config.start_after)
        elif active:
            log.warning(
                "run %s of another job did not finish; starting afresh", active.get("run_id")
            )
        config = dataclasses.replace(config, run_id=run_id)
        lease.run_id = run_id
        record = RunRecord(store, run_id)
        if extra.get("resumed"):
            record.note(event="resumed", cursor=config.start_after)
            previous = read_json(store, f"{RUNS}{run_id}/summary.json") or {}
            extra["segments"] = int(previous.get("segments", 1)) + 1
        record.start(config, **{k: v for k, v in extra.items() if v is not None})
        hide = _state_inside(source.inner if isinstance(source, RetrySource) else source, store)
        if "" in hide or "./" in hide:
            raise InvalidInput(f"--state {config.state} is the source itself; keep the state apart")
        return _run(
            config, store, record, lease, source, target, on_progress, stop, boto3_session, hide
        )
    finally:
        lease.release()


def _run(
    config: RunConfig,
    store: Store,
    record: RunRecord,
    lease: Lease,
    source: Source,
    target: Target,
    on_progress: Callable[[RunSummary], None] | None,
    stop: threading.Event | None,
    boto3_session: Any,
    hide: tuple[str, ...],
) -> RunSummary:
    threshold = Threshold(config.max_failures)
    incremental = Incremental(store, start_after=config.start_after) if config.incremental else None

    def on_outcome(outcome: Outcome) -> None:
        record.record(outcome)
        threshold.add(outcome)

    def on_advance(outcome: Outcome) -> None:
        # The engine's cursor has moved past this batch: checkpoint it, and remember what
        # was dispatched, in key order, for the incremental state.
        record.checkpoint(outcome.batch.last_key)
        if incremental is not None and outcome.status == DISPATCHED:
            incremental.dispatched(outcome.batch.items)

    def should_stop() -> str | None:
        if lease.lost:
            return "lost the lease"
        if stop is not None and stop.is_set():
            return INTERRUPTED
        return threshold.crossed()

    try:
        try:
            summary = engine.run(
                config,
                boto3_session=boto3_session,
                source=source,
                target=target,
                on_outcome=on_outcome,
                on_progress=on_progress,
                keep=incremental.changed if incremental is not None else None,
                should_stop=should_stop,
                hide=hide,
                on_advance=on_advance,
            )
        except HopperError as exc:
            # The run could not start (a worker that does not load, a missing function):
            # record why, and leave nothing for the next run to resume.
            record.finish({"status": "failed", "error": str(exc)}, keep_active=False)
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
        threshold_stop = bool(summary.stopped and summary.stopped.startswith("failure threshold"))
        unfinished = summary.cursor is not None and not threshold_stop
        record.finish(summary.to_dict(), keep_active=unfinished)
        return summary
    finally:
        if incremental is not None:
            incremental.close()
