"""Selection: which listed items a run keeps."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase

from hopper.config import RunConfig
from hopper.items import Item


@dataclass(frozen=True)
class Selector:
    """Glob include/exclude on the full key (case-sensitive, `*` crosses `/`), size, time."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    min_size: int | None = None
    max_size: int | None = None
    modified_after: datetime | None = None
    modified_before: datetime | None = None

    @classmethod
    def from_config(cls, config: RunConfig) -> Selector:
        return cls(
            include=config.include,
            exclude=config.exclude,
            min_size=config.min_size,
            max_size=config.max_size,
            modified_after=config.modified_after,
            modified_before=config.modified_before,
        )

    @property
    def keeps_everything(self) -> bool:
        """No filter at all: the listing need not ask about each item."""
        return not (
            self.include
            or self.exclude
            or self.min_size is not None
            or self.max_size is not None
            or self.modified_after is not None
            or self.modified_before is not None
        )

    def __call__(self, item: Item) -> bool:
        key = item.key
        if self.include and not any(fnmatchcase(key, pattern) for pattern in self.include):
            return False
        if any(fnmatchcase(key, pattern) for pattern in self.exclude):
            return False
        size = item.size or 0
        if self.min_size is not None and size < self.min_size:
            return False
        if self.max_size is not None and size > self.max_size:
            return False
        modified = item.last_modified
        if self.modified_after is not None and (
            modified is None or modified <= self.modified_after
        ):
            return False
        return self.modified_before is None or (
            modified is not None and modified < self.modified_before
        )

    def filter(self, items: Iterable[Item]) -> Iterator[Item]:
        return (item for item in items if self(item))
