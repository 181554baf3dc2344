"""Cut the selected items into batches by count and by payload bytes, streaming."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from hopper.event import build_event, dumps, item_bytes, string_bytes
from hopper.items import Batch, Item

# Widest values the hopper fields can take, so the size bound holds for any batch or attempt.
_WIDEST_BATCH = 10**15
_WIDEST_ATTEMPT = 10**6
_PREFIX_FIELD = len(dumps({"dataset_prefix": ""})) - 2 + 1  # `"dataset_prefix":""` plus a comma


@dataclass(frozen=True, slots=True)
class Passed:
    """An item the run passes over (unchanged since its worker last succeeded): the cursor may
    move past it once batch `after` and every batch before it have settled."""

    key: str
    after: int = 0


@dataclass(frozen=True, slots=True)
class Oversize:
    """A one-item batch whose event alone exceeds the payload cap: reported failed, never sent."""

    batch: Batch
    size: int
    limit: int

    @property
    def reason(self) -> str:
        return f"event is {self.size} bytes, over the {self.limit}-byte invocation payload limit"


class EventSizer:
    """An upper bound on a batch's encoded event size, without encoding each candidate."""

    def __init__(self, *, run_id: str, payload: Mapping[str, Any], bucket: str | None) -> None:
        empty = Batch(index=_WIDEST_BATCH, items=())
        base = build_event(
            batch=empty, run_id=run_id, attempt=_WIDEST_ATTEMPT, payload=payload, bucket=bucket
        )
        self.overhead = len(dumps(base))

    def size(self, items_bytes: int, count: int, single_key: str | None = None) -> int:
        """The bound for `count` items whose entries take `items_bytes` together."""
        total = self.overhead + items_bytes + max(0, count - 1)
        if single_key is not None:
            total += _PREFIX_FIELD + string_bytes(single_key)
        return total


def make_batches(
    items: Iterable[Item | Passed],
    *,
    batch_size: int,
    limit: int,
    sizer: EventSizer,
    first_index: int = 1,
) -> Iterator[Batch | Oversize | Passed]:
    """Batches in key order; an item too large on its own comes out as an Oversize, and an
    item passed over as a Passed that names the batch it follows (the open one, if any)."""
    index = first_index
    current: list[Item] = []
    current_bytes = 0
    for item in items:
        if isinstance(item, Passed):
            yield Passed(item.key, index if current else index - 1)
            continue
        own = item_bytes(item)
        alone = sizer.size(own, 1, item.key)
        full = len(current) >= batch_size
        too_big = bool(current) and sizer.size(current_bytes + own, len(current) + 1) > limit
        if current and (full or too_big or alone > limit):
            yield Batch(index=index, items=tuple(current))
            index += 1
            current, current_bytes = [], 0
        if alone > limit:
            yield Oversize(batch=Batch(index=index, items=(item,)), size=alone, limit=limit)
            index += 1
            continue
        current.append(item)
        current_bytes += own
    if current:
        yield Batch(index=index, items=tuple(current))
