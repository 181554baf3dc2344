"""The values that flow through a run: items listed from a source, batches of them, and what
became of each batch (its Outcome) and of the run (why it stopped early, if it did)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


@dataclass(frozen=True, slots=True)
class Item:
    """One object (or, in prefixes mode, one common prefix) of a source."""

    key: str
    size: int | None = None
    etag: str | None = None
    last_modified: datetime | None = None
    # Absolute path, for local sources only: the worker reads the file through it.
    path: str | None = None

    def to_event(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key}
        if self.size is not None:
            out["size"] = self.size
        if self.etag is not None:
            out["etag"] = self.etag
        if self.last_modified is not None:
            out["last_modified"] = self.last_modified.isoformat()
        if self.path is not None:
            out["path"] = self.path
        return out


@dataclass(frozen=True, slots=True)
class Skipped:
    """Something the source saw and deliberately left out, with the reason."""

    key: str
    reason: str


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing, in key order."""

    items: tuple[Item, ...]
    skipped: tuple[Skipped, ...] = ()


@dataclass(frozen=True, slots=True)
class Batch:
    """Items sent together in one invocation. `index` numbers batches from 1 within a run."""

    index: int
    items: tuple[Item, ...]
    # The encoded size of its `items` entries together, as batching counted them (0 when the
    # batch was not made by batching): plan reads its events' sizes from it.
    items_bytes: int = field(default=0, compare=False)

    @property
    def first_key(self) -> str:
        return self.items[0].key

    @property
    def last_key(self) -> str:
        return self.items[-1].key

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(item.key for item in self.items)


class BatchStatus(StrEnum):
    """What dispatch did with a batch. The values are those the ledger and JSON carry."""

    # Lambda accepted the batch, or the local call ran.
    DISPATCHED = "dispatched"
    # Dispatch failed after retries, or with an error not worth retrying.
    FAILED = "failed"
    # Stopped before sending (deadline, interrupt, threshold): it stays retryable.
    NOT_DISPATCHED = "not_dispatched"


class WorkerStatus(StrEnum):
    """What the worker made of a dispatched batch, as far as hopper knows."""

    # The worker succeeded.
    PROCESSED = "processed"
    # The worker raised or timed out (after Lambda's own retries, for an event invoke).
    WORKER_FAILED = "worker_failed"
    # Sent asynchronously; no record of the worker's outcome has arrived yet.
    PENDING = "pending"
    # No record arrived by the time one must have (hopper.runstate.outcomes.lost_after).
    LOST = "lost"


# The members as plain names: looking a member up on its Enum class is a descriptor call, about
# 70 ns, and these are read several times per batch.
DISPATCHED = BatchStatus.DISPATCHED
FAILED = BatchStatus.FAILED
NOT_DISPATCHED = BatchStatus.NOT_DISPATCHED
PROCESSED = WorkerStatus.PROCESSED
WORKER_FAILED = WorkerStatus.WORKER_FAILED
PENDING = WorkerStatus.PENDING
LOST = WorkerStatus.LOST


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one batch: how dispatch ended (`status`) and, for a dispatched batch,
    what the worker made of it (`worker`: None when nobody will know, an untracked event
    invoke). `error_type` and `error` are dispatch's error, or the worker's."""

    batch: Batch
    status: BatchStatus
    attempts: int = 0
    request_id: str | None = None
    result: Any = None
    error_type: str | None = None
    error: str | None = None
    worker: WorkerStatus | None = None

    @property
    def failed(self) -> bool:
        """Dispatch failed, or the worker did: what --max-failures counts."""
        return self.status is FAILED or self.worker is WORKER_FAILED

    @property
    def settled(self) -> bool:
        """Dispatched or definitely failed: a resumed run need not look at it again."""
        return self.status is not NOT_DISPATCHED


class StopReason(StrEnum):
    """Why a run stopped before its listing was done."""

    DEADLINE = "deadline"
    INTERRUPTED = "interrupted"
    LEASE_LOST = "lease lost"
    FAILURE_THRESHOLD = "failure threshold"
    FATAL_ERROR = "fatal error"


@dataclass(frozen=True, slots=True)
class Stop:
    """A stop reason and the words a person reads for it (the summary's `stopped`)."""

    reason: StopReason
    message: str


DEADLINE_REACHED = Stop(StopReason.DEADLINE, "deadline reached")
INTERRUPTED = Stop(StopReason.INTERRUPTED, "interrupted")
LEASE_LOST = Stop(StopReason.LEASE_LOST, "lost the lease")
