"""The values that flow through a run: items listed from a source, and batches of them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
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

    @property
    def first_key(self) -> str:
        return self.items[0].key

    @property
    def last_key(self) -> str:
        return self.items[-1].key

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(item.key for item in self.items)
