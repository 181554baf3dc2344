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
    """An upper bound on a batch's encoded event size, without encoding each candidate; and
    the exact size of a batch's first attempt, without encoding it either."""

    def __init__(self, *, run_id: str, payload: Mapping[str, Any], bucket: str | None) -> None:
        def length(index: int, attempt: int) -> int:
            empty = Batch(index=index, items=())
            event = build_event(
                batch=empty, run_id=run_id, attempt=attempt, payload=payload, bucket=bucket
            )
            return len(dumps(event))

        self.overhead = length(_WIDEST_BATCH, _WIDEST_ATTEMPT)
        # Batch 0, attempt 1: a batch's number adds its digits beyond the one of "0".
        self._first_attempt = length(0, 1) - 1

    def size(self, items_bytes: int, count: int, single_key: str | None = None) -> int:
        """The bound for `count` items whose entries take `items_bytes` together."""
        total = self.overhead + items_bytes + max(0, count - 1)
        if single_key is not None:
            total += _PREFIX_FIELD + string_bytes(single_key)
        return total

    def exact(self, batch: Batch) -> int:
        """len(EventRecipe.encode(batch, 1)) for a batch made by make_batches."""
        count = len(batch.items)
        total = self._first_attempt + len(str(batch.index)) + batch.items_bytes + count - 1
        if count == 1:
            # _PREFIX_FIELD counts a pair of quotes that string_bytes counts again.
            total += _PREFIX_FIELD - 2 + string_bytes(batch.items[0].key)
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
    # sizer.size spelled out for speed (this runs once per item): a batch of n items whose
    # entries take b bytes is bounded by overhead + b + n - 1 (+ the key again when n == 1).
    room = limit - sizer.overhead
    for item in items:
        if isinstance(item, Passed):
            yield Passed(item.key, index if current else index - 1)
            continue
        own = item_bytes(item)
        # Alone, its event also names its key (dataset_prefix), which takes at most `own`.
        alone_fits = 2 * own + _PREFIX_FIELD <= room or sizer.size(own, 1, item.key) <= limit
        if current and (
            len(current) >= batch_size
            or current_bytes + own + len(current) > room
            or not alone_fits
        ):
            yield Batch(index=index, items=tuple(current), items_bytes=current_bytes)
            index += 1
            current, current_bytes = [], 0
        if not alone_fits:
            alone = sizer.size(own, 1, item.key)
            yield Oversize(batch=Batch(index=index, items=(item,)), size=alone, limit=limit)
            index += 1
            continue
        current.append(item)
        current_bytes += own
    if current:
        yield Batch(index=index, items=tuple(current), items_bytes=current_bytes)
