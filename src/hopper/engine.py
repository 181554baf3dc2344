"""run() and plan() for one run: list -> select -> batch -> dispatch -> summary.

No I/O of its own: the source, the target and the hooks do it. What a caller adds to a run
(the stateful run's ledger, checkpoint, incremental filter and lease) comes through RunHooks.
"""

from __future__ import annotations

import dataclasses
import itertools
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from hopper.batching import EventSizer, Oversize, Passed, make_batches
from hopper.config import RunConfig
from hopper.dispatch import Dispatcher
from hopper.errors import InvalidInput
from hopper.event import EventRecipe
from hopper.items import (
    DEADLINE_REACHED,
    DISPATCHED,
    INTERRUPTED,
    PENDING,
    Batch,
    Item,
    Outcome,
    Skipped,
    Stop,
)
from hopper.retry import RetryPolicy
from hopper.selection import Selector
from hopper.sources import STATE_PREFIX, Datasets, Source, parse_source
from hopper.summary import SHOW, PlanSummary, RunSummary, inventory_facts
from hopper.target import Multiplexing, Target
from hopper.targets import parse_target

if TYPE_CHECKING:
    from hopper.inventory import InventorySource

if TYPE_CHECKING:
    from hopper.threshold import Threshold


class RunHooks:
    """What a caller adds to a run: override the methods you need; each default adds nothing.

    As Powertools' BasePartialProcessor declares its hooks, this declares every point where a
    run calls out, and from which thread.
    """

    def keep(self, item: Item) -> bool:
        """False drops an item that has not changed (incremental runs). It is counted as
        unchanged and does not count toward --limit. Called from the listing's thread."""
        return True

    def should_stop(self) -> Stop | None:
        """Asked before each batch is taken; a Stop ends dispatch after what is in flight."""
        return None

    def on_outcome(self, outcome: Outcome) -> None:
        """Every batch's outcome, in any order, one call at a time, from a dispatch thread;
        always before the cursor may pass that batch."""

    def on_advance(self, outcome: Outcome) -> None:
        """Each settled batch in batch order (so in key order), as the cursor passes it."""

    def on_progress(self, summary: RunSummary) -> None:
        """The summary so far: every 100 items selected, after each outcome, at the end."""


_NO_HOOKS = RunHooks()


def new_run_id() -> str:
    """Sortable by start time, unique enough for concurrent runs."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def make_source(config: RunConfig, *, session: Any = None) -> Source:
    def listing(mode: str) -> Source:
        return parse_source(
            config.source,
            mode=mode,
            session=session,
            transport_name=config.transport,
            parallelism=config.list_parallelism,
        )

    if config.mode == "prefixes" and config.incremental:
        # A dataset is unchanged only if nothing inside it changed.
        return Datasets(listing("prefixes"), listing("objects"))
    return listing(config.mode)


def _reports(source: Source, config: RunConfig) -> list[InventorySource]:
    """The inventory sources `source` reads from (a Datasets' prefixes, then its objects);
    none, and no import of the inventory module, unless the config names a report."""
    if not config.source.strip().startswith("inventory:"):
        return []
    from hopper.inventory import InventorySource

    parts = (source.prefixes, source.objects) if isinstance(source, Datasets) else (source,)
    return [part for part in parts if isinstance(part, InventorySource)]


def make_target(config: RunConfig, *, session: Any = None) -> Target:
    if config.target is None:
        raise InvalidInput("no target: pass --target lambda:NAME or --target FILE.py:FUNCTION")
    return parse_target(
        config.target,
        invocation_type=config.invocation_type,
        concurrency=config.effective_concurrency(),
        timeout=config.timeout,
        memory=config.memory,
        session=session,
        transport_name=config.transport,
    )


def _selected(
    source: Source,
    config: RunConfig,
    *,
    on_listed: Callable[[Item], None],
    on_skipped: Callable[[Skipped], None],
    on_selected: Callable[[Item], None],
    hooks: RunHooks = _NO_HOOKS,
    hide: tuple[str, ...] = (),
) -> Iterator[Item | Passed]:
    """The listing, filtered and limited, counted as it streams past.

    `hooks.keep` is a last filter (incremental mode: has the item changed?); what it drops
    comes out as a Passed, for the cursor to move over, and does not count toward --limit.
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

    chosen: Iterator[Item] = (
        listed() if select.keeps_everything else (item for item in listed() if select(item))
    )
    # Hooks that keep everything cost the listing no call per item.
    if type(hooks).keep is RunHooks.keep:
        if config.limit is not None:
            chosen = itertools.islice(chosen, config.limit)
        for item in chosen:
            on_selected(item)
            yield item
        return
    left = config.limit
    for item in chosen:
        if not hooks.keep(item):
            yield Passed(item.key)
            continue
        on_selected(item)
        yield item
        if left is not None:
            left -= 1
            if left == 0:
                return


class Cursor:
    """The last key before which every item has settled: its batch was dispatched or failed,
    or it was passed over as unchanged.

    Batches settle out of order; only the contiguous prefix counts, so a resumed run starting
    after the cursor misses nothing. A batch not dispatched blocks the cursor for good. An
    item passed over moves it once the batch it follows has. Holds at most the in-flight
    window of outcomes; settle() and passed() may come from different threads.
    """

    def __init__(
        self, start_after: str | None, on_advance: Callable[[Outcome], None] | None = None
    ) -> None:
        self.key = start_after
        self._on_advance = on_advance
        self._next = 1
        self._waiting: dict[int, Outcome] = {}
        # Batch index -> the greatest key passed over right after it, until it settles.
        self._passed: dict[int, str] = {}
        self._blocked = False
        self._lock = threading.Lock()

    def settle(self, outcome: Outcome) -> None:
        with self._lock:
            if self._blocked:
                return
            self._waiting[outcome.batch.index] = outcome
            while self._next in self._waiting:
                ready = self._waiting.pop(self._next)
                if not ready.settled:
                    self._blocked = True
                    self._waiting.clear()
                    self._passed.clear()
                    return
                self.key = self._passed.pop(self._next, ready.batch.last_key)
                if self._on_advance is not None:
                    self._on_advance(ready)
                self._next += 1

    def passed(self, step: Passed) -> None:
        with self._lock:
            if self._blocked:
                return
            if step.after < self._next:
                self.key = step.key
            else:
                self._passed[step.after] = step.key


class _NoThreshold:
    """No --max-failures: nothing to count, never crossed."""

    active = False

    def add(self, outcome: Outcome) -> None:
        pass

    def crossed(self) -> Stop | None:
        return None


def _threshold(text: str | None) -> Threshold | _NoThreshold:
    if text is None:
        return _NoThreshold()
    from hopper.threshold import Threshold

    return Threshold(text)


def dispatcher_for(target: Target, **rules: Any) -> Dispatcher:
    """The one-thread loop for a target that can multiplex now, the threads otherwise.
    `rules` are Dispatcher's keyword arguments. Only the strategy used is imported: a cold
    Lambda start pays for one."""
    if isinstance(target, Multiplexing):
        stream = target.multiplexer(int(rules["concurrency"]))
        if stream is not None:
            from hopper.dispatch_loop import LoopDispatcher

            return LoopDispatcher(target, stream, **rules)
    from hopper.dispatch_threads import ThreadDispatcher

    return ThreadDispatcher(target, **rules)


def run(
    config: RunConfig,
    *,
    session: Any = None,
    source: Source | None = None,
    target: Target | None = None,
    hooks: RunHooks | None = None,
    stop: threading.Event | None = None,
    retry: RetryPolicy | None = None,
    hide: tuple[str, ...] = (),
) -> RunSummary:
    """Run once, without state. Raises HopperError if the run cannot start; otherwise returns
    the summary. (hopper.run is the one entry point: it runs with state when config.state is
    set, and comes here otherwise.)

    Setting `stop` (Ctrl-C) ends dispatch after the batches in flight; so does --max-failures,
    once crossed. Keys under a `hide` prefix (where the run keeps its state) are never listed.
    """
    hooks = hooks or _NO_HOOKS
    clock = time.monotonic
    began = clock()
    source = source or make_source(config, session=session)
    for report in _reports(source, config):
        # Ctrl-C reaches into the report's reading, which comes before the first item.
        report.stop = stop
    target = target or make_target(config, session=session)
    run_id = config.run_id or new_run_id()
    summary = RunSummary(
        run_id=run_id,
        source=source.describe(),
        target=target.name,
        mode=config.mode,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    counts = summary.counts
    cursor = Cursor(config.start_after, hooks.on_advance)
    threshold = _threshold(config.max_failures)

    def listed(_: Item) -> None:
        counts.listed += 1

    def selected(_: Item) -> None:
        counts.selected += 1
        if counts.selected % 100 == 0:
            hooks.on_progress(summary)

    tracked = config.results_queue is not None

    def settled(outcome: Outcome) -> None:
        if tracked and outcome.worker is None and outcome.status is DISPATCHED:
            # The worker's destination record will tell how it went.
            outcome = dataclasses.replace(outcome, worker=PENDING)
        summary.record(outcome)
        threshold.add(outcome)
        # The outcome is reported before the cursor may pass it: a ledger written from
        # on_outcome never lags a checkpoint written from on_advance.
        hooks.on_outcome(outcome)
        cursor.settle(outcome)
        hooks.on_progress(summary)

    def should_stop() -> Stop | None:
        asked = hooks.should_stop()
        if asked is not None:
            return asked
        if stop is not None and stop.is_set():
            return INTERRUPTED
        return threshold.crossed()

    deadline_at = began + config.deadline if config.deadline else None
    # Why the plan was cut while it passed over unchanged items, if it was.
    cut: list[Stop] = []

    def counted(plan: Iterator[Batch | Oversize | Passed]) -> Iterator[Batch | Oversize]:
        for step in plan:
            if isinstance(step, Passed):
                # Dispatch never sees these: the deadline and a stop are checked here, or a
                # run over thousands of unchanged items would only stop at the next batch.
                counts.unchanged += 1
                cursor.passed(step)
                stopped = should_stop()
                if stopped is None and deadline_at is not None and clock() >= deadline_at:
                    stopped = DEADLINE_REACHED
                if stopped is not None:
                    cut.append(stopped)
                    return
                continue
            counts.batches += 1
            yield step

    recipe = EventRecipe(run_id=run_id, payload=config.payload, bucket=source.bucket)
    target.prepare()
    try:
        items = _selected(
            source,
            config,
            on_listed=listed,
            on_skipped=summary.record_skip,
            on_selected=selected,
            hooks=hooks,
            hide=hide,
        )
        plan_ = make_batches(
            items,
            batch_size=config.batch_size,
            limit=config.payload_limit,
            sizer=EventSizer(run_id=run_id, payload=config.payload, bucket=source.bucket),
        )
        dispatcher = dispatcher_for(
            target,
            recipe=recipe,
            concurrency=config.effective_concurrency(),
            deadline_at=deadline_at,
            retry=retry or RetryPolicy(max_attempts=config.max_attempts),
            clock=clock,
            should_stop=should_stop,
            # A local worker runs through a chunk of short tasks faster than their results
            # can be counted: one at a time keeps the threshold exact.
            max_chunk=1 if threshold.active else None,
        )
        ended = dispatcher.run(counted(plan_), settled)
    finally:
        target.close()

    stop_ = cut[0] if cut else ended.stopped
    summary.finish(
        exhausted=ended.exhausted and not cut,
        deadline_reached=ended.deadline_reached or stop_ is DEADLINE_REACHED,
        stop=stop_,
        fatal=ended.fatal,
        cursor=cursor.key,
        duration_s=clock() - began,
    )
    hooks.on_progress(summary)
    return summary


def plan(
    config: RunConfig,
    *,
    session: Any = None,
    source: Source | None = None,
    hooks: RunHooks | None = None,
) -> PlanSummary:
    """List, select and batch exactly as run() would, and invoke nothing. `hooks.keep` is
    asked as a run would ask it (incremental: what has not changed is left out)."""
    if config.target is not None:
        # Validates the syntax only; no worker is loaded and no AWS call is made.
        parse_target(config.target, invocation_type=config.invocation_type)
    source = source or make_source(config, session=session)
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

    def skipped(_: Skipped) -> None:
        summary.skipped += 1

    def selected(item: Item) -> None:
        summary.selected += 1
        if len(summary.first_keys) < SHOW:
            summary.first_keys.append(item.key)

    items = _selected(
        source,
        config,
        on_listed=listed,
        on_skipped=skipped,
        on_selected=selected,
        hooks=hooks or _NO_HOOKS,
    )
    sizer = EventSizer(run_id=run_id, payload=config.payload, bucket=source.bucket)
    for step in make_batches(
        items, batch_size=config.batch_size, limit=config.payload_limit, sizer=sizer
    ):
        if isinstance(step, Passed):
            summary.unchanged += 1
            continue
        summary.batches += 1
        if isinstance(step, Oversize):
            summary.oversize += 1
            if len(summary.oversize_items) < SHOW:
                summary.oversize_items.append({"key": step.batch.first_key, "reason": step.reason})
            continue
        n = len(step.items)
        summary.min_batch_items = min(summary.min_batch_items or n, n)
        summary.max_batch_items = max(summary.max_batch_items, n)
        # Exact, without building or encoding the event: this runs once per batch.
        size = sizer.exact(step)
        if size > summary.largest_payload_bytes:
            summary.largest_payload_bytes = size
            summary.largest_payload_batch = step.index
    if isinstance(source, Datasets):
        summary.fingerprint_objects = source.objects_listed
    reports = _reports(source, config)
    if reports:
        # The last read the objects (of a Datasets, its objects listing): it counted the rows.
        last = reports[-1]
        summary.inventory = inventory_facts(last.report, last.rows_read, last.rows_current)
    return summary


def count(config: RunConfig, *, session: Any = None) -> int:
    """How many items the listing selects (its filters and --limit), invoking nothing and
    batching nothing: the total a progress bar counts toward. It lists once more."""
    source = make_source(config, session=session)
    selected = 0

    def one(_: Item) -> None:
        nonlocal selected
        selected += 1

    def ignore(_: Any) -> None:
        pass

    for _ in _selected(source, config, on_listed=ignore, on_skipped=ignore, on_selected=one):
        pass
    return selected
