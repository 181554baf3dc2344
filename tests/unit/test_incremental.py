"""The incremental state merge, on a folder store: what is kept, dropped and carried."""

from __future__ import annotations

import json
from pathlib import Path

from hopper.items import DISPATCHED, PROCESSED, Batch, Item, Outcome
from hopper.runstate.incremental import Incremental
from hopper.runstate.store import LocalStore

KEY = "incremental/job.jsonl"


def state(store: LocalStore) -> list[tuple[str, str | None]]:
    return [(e["k"], e["e"]) for e in map(json.loads, store.lines(KEY))]


def seed(store: LocalStore, entries: list[tuple[str, str]]) -> None:
    store.put(KEY, "".join(json.dumps({"k": k, "e": e}) + "\n" for k, e in entries).encode())


def incremental(store: LocalStore, start_after: str | None) -> Incremental:
    return Incremental(store, KEY, run_id="run", start_after=start_after)


def processed(*items: Item) -> Outcome:
    return Outcome(Batch(1, items), DISPATCHED, 1, worker=PROCESSED)


def test_a_full_listing_keeps_unchanged_and_dispatched_and_drops_the_rest(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    seed(store, [("a", "1"), ("b", "1"), ("c", "1"), ("gone", "1")])
    incremental_ = incremental(store, None)
    decisions = {
        key: incremental_.changed(Item(key, etag=etag))
        for key, etag in [("a", "1"), ("b", "2"), ("c", "1"), ("new", "1")]
    }
    assert decisions == {"a": False, "b": True, "c": False, "new": True}
    incremental_.settled(processed(Item("b", etag="2")))  # "new" failed: not recorded
    incremental_.commit(end=None)
    assert state(store) == [("a", "1"), ("b", "2"), ("c", "1")]


def test_a_partial_run_carries_what_it_did_not_reach(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    seed(store, [("a", "1"), ("b", "1"), ("c", "1"), ("d", "1"), ("e", "1")])
    # Resumed after "a", stopped with everything up to "c" settled.
    incremental_ = incremental(store, "a")
    assert incremental_.changed(Item("b", etag="2"))
    assert not incremental_.changed(Item("c", etag="1"))
    assert incremental_.changed(Item("d", etag="9"))  # listed but not settled: beyond the end
    incremental_.settled(processed(Item("b", etag="2")))
    incremental_.commit(end="c")
    assert state(store) == [("a", "1"), ("b", "2"), ("c", "1"), ("d", "1"), ("e", "1")]


def test_no_previous_state(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    incremental_ = incremental(store, None)
    assert incremental_.changed(Item("x", etag="1"))
    incremental_.settled(processed(Item("x", etag="1")))
    assert incremental_.commit(end=None) == 1
    assert state(store) == [("x", "1")]
