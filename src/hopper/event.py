"""The event a worker receives: the seed's shape plus hopper's fields.

{**payload, "dataset_prefix": KEY (one-item batches), "bucket": B (S3 sources),
 "items": [...], "hopper": {"run_id", "batch", "attempt", "idempotency_key"}}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hopper.items import Batch, Item

# hopper owns these names in the event; a payload may not set them.
RESERVED_FIELDS = frozenset({"dataset_prefix", "bucket", "items", "hopper"})

# Room left in the payload cap for fields that change between attempts (the attempt number).
ATTEMPT_HEADROOM = 16


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def idempotency_key(run_id: str, batch: Batch) -> str:
    """Stable across attempts of one batch, so a worker can drop a duplicate delivery."""
    digest = hashlib.sha256(run_id.encode("utf-8"))
    for item in batch.items:
        digest.update(b"\0")
        digest.update(item.key.encode("utf-8"))
        digest.update(b"\0")
        digest.update((item.etag or "").encode("utf-8"))
    return digest.hexdigest()[:32]


def build_event(
    *,
    batch: Batch,
    run_id: str,
    attempt: int,
    payload: Mapping[str, Any],
    bucket: str | None,
) -> dict[str, Any]:
    event: dict[str, Any] = dict(payload)
    if len(batch.items) == 1:
        event["dataset_prefix"] = batch.items[0].key
    if bucket is not None:
        event["bucket"] = bucket
    event["items"] = [item.to_event() for item in batch.items]
    event["hopper"] = {
        "run_id": run_id,
        "batch": batch.index,
        "attempt": attempt,
        "idempotency_key": idempotency_key(run_id, batch),
    }
    return event


def encode_event(
    *,
    batch: Batch,
    run_id: str,
    attempt: int,
    payload: Mapping[str, Any],
    bucket: str | None,
) -> bytes:
    return dumps(
        build_event(batch=batch, run_id=run_id, attempt=attempt, payload=payload, bucket=bucket)
    )


@dataclass(frozen=True, slots=True)
class EventRecipe:
    """What every event of one run shares: the run id, the run's payload and the bucket."""

    run_id: str
    payload: Mapping[str, Any]
    bucket: str | None

    def encode(self, batch: Batch, attempt: int) -> bytes:
        return encode_event(
            batch=batch,
            run_id=self.run_id,
            attempt=attempt,
            payload=self.payload,
            bucket=self.bucket,
        )


# One batch and attempt as plain tuples, which pickle about 15 times faster than the
# dataclasses: local mode sends these and its worker process builds the event from them.
TaskRow = tuple[int, int, tuple[tuple[Any, ...], ...]]


def task_row(batch: Batch, attempt: int) -> TaskRow:
    return (
        batch.index,
        attempt,
        tuple((i.key, i.size, i.etag, i.last_modified, i.path) for i in batch.items),
    )


def event_from_row(
    row: TaskRow, run_id: str, payload: Mapping[str, Any], bucket: str | None
) -> dict[str, Any]:
    """The event build_event makes for the batch and attempt `row` describes."""
    index, attempt, items = row
    batch = Batch(index=index, items=tuple(Item(*fields) for fields in items))
    return build_event(batch=batch, run_id=run_id, attempt=attempt, payload=payload, bucket=bucket)


def string_bytes(text: str) -> int:
    """Encoded size of a JSON string, quotes included, as `dumps` writes it."""
    # Printable ASCII is written as it is, but for the quote and the backslash.
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return len(text) + 2
    return len(dumps(text))


def isoformat_length(moment: datetime) -> int:
    """len(moment.isoformat()), without formatting it: twice as fast as the formatting."""
    length = 26 if moment.microsecond else 19
    offset = moment.utcoffset()
    if offset is not None:
        # +HH:MM, then :SS and .ffffff only when they are not zero.
        length += 6
        if offset.seconds % 60 or offset.microseconds:
            length += 3
        if offset.microseconds:
            length += 7
    return length


def item_bytes(item: Item) -> int:
    """Encoded size of one entry of `items`, counted without encoding it.

    Equal to len(dumps(item.to_event())); tests/unit/test_event_and_batching.py checks it.
    Sizing runs once per item listed, so it avoids json.dumps for the plain keys most are.
    """
    total = 8 + string_bytes(item.key)  # {"key":...}
    if item.size is not None:
        total += 8 + len(str(item.size))  # ,"size":N
    if item.etag is not None:
        total += 8 + string_bytes(item.etag)  # ,"etag":"..."
    if item.last_modified is not None:
        total += 19 + isoformat_length(item.last_modified)  # ,"last_modified":"..."
    if item.path is not None:
        total += 8 + string_bytes(item.path)  # ,"path":"..."
    return total
