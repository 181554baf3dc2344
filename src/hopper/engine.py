"""run() and plan(): wire list -> select -> batch -> dispatch -> summary. No I/O of its own."""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from hopper.batching import EventSizer, Oversize, make_batches
from hopper.config import RunConfig
from hopper.dispatch import INTERRUPTED, Dispatcher, InOrder, Outcome, RetryPolicy
from hopper.errors import InvalidInput
from hopper.event import encode_event
from hopper.items import Batch, Item
from hopper.selection import Selector
from hopper.sources import STATE_PREFIX, Source, parse_source
from hopper.summary import SHOW, PlanSummary, RunSummary
from hopper.targets import Target, parse_target


def new_run_id() -> str:
    """Sortable by start time, unique enough for concurrent runs."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def make_source(config: RunConfig, *, boto3_session: Any = None) -> Source:
    return parse_source(
        config.source,
        mode=config.mode,
        boto3_session=boto3_session,
        transport_name=config.transport,
        parallelism=config.list_parallelism,
    )


def make_target(config: RunConfig, *, boto3_session: Any = None) -> Target:
    if config.target is None:
        raise InvalidInput("no target: pass --target lambda:NAME or --target FILE.py:FUNCTION")
    return parse_target(
        config.target,
        invocation_type=config.invocation_type,
        concurrency=config.effective_concurrency(),
        timeout=config.timeout,
        memory=config.memory,
        boto3_session=boto3_session,
        transport_name=config.transport,
    )


def _selected(
    source: Source,
    config: RunConfig,
    *,
    on_listed: Callable[[Item], None],
    on_skipped: Callable[[Any], None],
    on_selected: Callable[[Item], None],
    keep: Callable[[Item], bool] | None = None,
    on_unchanged: Callable[[Item], None] | None = None,
    hide: tuple[str, ...] = (),
) -> Iterator[Item]:
    """The listing, filtered and limited, counted as it streams past.

    `keep` is a last filter (incremental mode: has the item changed?); what it drops is
    reported to `on_unchanged` and does not count toward --limit.
    """
    select = Selector.from_config(config)
    hidden = (STATE_PREFIX, *hide)

    def listed() -> Iterator[Item]:
        for page in source.pages(config.start_after):
            for skip in page.skipped:
                on_skipped(skip)
            for item in page.items:
                if item.key.startswith(hidden):
                    continue
                on_listed(item)
                yield item

    chosen: Iterator[Item] = (item for item in listed() if select(item))
    if keep is not None:
        chosen = _kept(chosen, keep, on_unchanged)
    if config.limit is not None:
        chosen = itertools.islice(chosen, config.limit)
    for item in chosen:
        on_selected(item)
        yield item


def _kept(
    items: Iterator[Item],
    keep: Callable[[Item], bool],
    on_dropped: Callable[[Item], None] | None,
) -> Iterator[Item]:
    for item in items:
        if keep(item):
            yield item
        elif on_dropped is not None:
            on_dropped(item)


class _Cursor:
    """The last key before which every batch has settled (dispatched or failed).

    Batches settle out of order; only the contiguous prefix counts, so a resumed run starting
    after the cursor misses nothing.
    """

    def __init__(
        self, start_after: str | None, on_advance: Callable[[Outcome], None] | None = None
    ) -> None:
        self.key = start_after
        self._on_advance = on_advance
        self._order = InOrder(self._advance)

    def _advance(self, outcome: Outcome) -> None:
        self.key = outcome.batch.last_key
        if self._on_advance is not None:
            self._on_advance(outcome)

    def settle(self, outcome: Outcome) -> None:
        self._order.settle(outcome)


def run(
    config: RunConfig,
    *,
    boto3_session: Any = None,
    source: Source | None = None,
    target: Target | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    on_progress: Callable[[RunSummary], None] | None = None,
    retry: RetryPolicy | None = None,
    keep: Callable[[Item], bool] | None = None,
    should_stop: Callable[[], str | None] | None = None,
    hide: tuple[str, ...] = (),
    on_advance: Callable[[Outcome], None] | None = None,
) -> RunSummary:
    """Run once. Raises HopperError if the run cannot start; otherwise returns the summary.

    `keep` drops unchanged items (incremental mode); `should_stop` can end dispatch early;
    keys under a `hide` prefix (where the run keeps its state) are never listed;
    `on_advance` gets each settled batch in key order, as the cursor moves past it.
    """
    clock = time.monotonic
    began = clock()
    source = source or make_source(config, boto3_session=boto3_session)
    target = target or make_target(config, boto3_session=boto3_session)
    run_id = config.run_id or new_run_id()
    summary = RunSummary(
        run_id=run_id,
        source=source.describe(),
        target=target.name,
        mode=config.mode,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    counts = summary.counts
    cursor = _Cursor(config.start_after, on_advance)

    def progress() -> None:
        if on_progress is not None:
            on_progress(summary)

    def listed(_: Item) -> None:
        counts.listed += 1

    def selected(_: Item) -> None:
        counts.selected += 1
        if counts.selected % 100 == 0:
            progress()

    def settled(outcome: Outcome) -> None:
        summary.record(outcome)
        # The outcome is reported before the cursor may pass it: a ledger written from
        # on_outcome never lags a checkpoint written from on_advance.
        if on_outcome is not None:
            on_outcome(outcome)
        cursor.settle(outcome)
        progress()

    def unchanged(_: Item) -> None:
        counts.unchanged += 1

    def counted(plan: Iterator[Batch | Oversize]) -> Iterator[Batch | Oversize]:
        for step in plan:
            counts.batches += 1
            yield step

    target.prepare()
    try:
        items = _selected(
            source,
            config,
            on_listed=listed,
            on_skipped=summary.record_skip,
            on_selected=selected,
            keep=keep,
            on_unchanged=unchanged,
            hide=hide,
        )
        plan_ = make_batches(
            items,
            batch_size=config.batch_size,
            limit=config.payload_limit,
            sizer=EventSizer(run_id=run_id, payload=config.payload, bucket=source.bucket),
        )
        dispatcher = Dispatcher(
            target,
            run_id=run_id,
            payload=config.payload,
            bucket=source.bucket,
            concurrency=config.effective_concurrency(),
            deadline_at=began + config.deadline if config.deadline else None,
            retry=retry or RetryPolicy(max_attempts=config.max_attempts),
            clock=clock,
            should_stop=should_stop,
            max_chunk=1 if config.max_failures is not None else None,
        )
        ended = dispatcher.run(counted(plan_), settled)
    finally:
        target.close()

    counts.not_dispatched = counts.selected - counts.dispatched - counts.failed
    summary.listing_complete = ended.exhausted
    if not ended.exhausted or counts.not_dispatched:
        summary.cursor = cursor.key
    if ended.fatal is not None:
        summary.error = str(ended.fatal)
    summary.stopped = ended.stopped
    if ended.deadline_reached and summary.stopped is None:
        summary.stopped = "deadline reached"
    clean = counts.failed == 0 and counts.not_dispatched == 0
    if clean and ended.exhausted and summary.error is None:
        summary.status = "succeeded"
    elif (
        summary.error is None
        and counts.failed == 0
        and (ended.deadline_reached or ended.stopped == INTERRUPTED)
    ):
        summary.status = "incomplete"
    else:
        summary.status = "failed"
    summary.results.sort(key=lambda entry: entry["batch"])
    summary.failures.sort(key=lambda entry: entry["batch"])
    summary.duration_s = round(clock() - began, 3)
    progress()
    return summary


def plan(
    config: RunConfig, *, boto3_session: Any = None, source: Source | None = None
) -> PlanSummary:
    """List, select and batch exactly as run() would, and invoke nothing."""
    if config.target is not None:
        # Validates the syntax only; no worker is loaded and no AWS call is made.
        parse_target(config.target, invocation_type=config.invocation_type)
    source = source or make_source(config, boto3_session=boto3_session)
    summary = PlanSummary(
        source=source.describe(),
        target=config.target,
        mode=config.mode,
        invocation_type=config.invocation_type,
        payload_limit=config.payload_limit,
    )
    run_id = new_run_id()

    def listed(_: Item) -> None:
        summary.listed += 1

    def skipped(_: Any) -> None:
        summary.skipped += 1

    def selected(item: Item) -> None:
        summary.selected += 1
        if len(summary.first_keys) < SHOW:
            summary.first_keys.append(item.key)

    items = _selected(source, config, on_listed=listed, on_skipped=skipped, on_selected=selected)
    for step in make_batches(
        items,
        batch_size=config.batch_size,
        limit=config.payload_limit,
        sizer=EventSizer(run_id=run_id, payload=config.payload, bucket=source.bucket),
    ):
        summary.batches += 1
        if isinstance(step, Oversize):
            summary.oversize += 1
            if len(summary.oversize_items) < SHOW:
                summary.oversize_items.append({"key": step.batch.first_key, "reason": step.reason})
            continue
        n = len(step.items)
        summary.min_batch_items = min(summary.min_batch_items or n, n)
        summary.max_batch_items = max(summary.max_batch_items, n)
        size = len(
            encode_event(
                batch=step, run_id=run_id, attempt=1, payload=config.payload, bucket=source.bucket
            )
        )
        if size > summary.largest_payload_bytes:
            summary.largest_payload_bytes = size
            summary.largest_payload_batch = step.index
    return summary
