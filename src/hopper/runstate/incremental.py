"""Incremental runs: skip what has not changed since its last successful dispatch.

The state is one sorted file of {"k": key, "e": etag} lines (INCREMENTAL_KEY), merged with the
sorted listing as both stream past.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from hopper.items import Item
from hopper.runstate.record import INCREMENTAL_KEY
from hopper.runstate.store import Store


@dataclass
class _Entry:
    key: str
    etag: str | None


def _entries(lines: Iterator[bytes]) -> Iterator[_Entry]:
    for raw in lines:
        if raw.strip():
            data = json.loads(raw)
            yield _Entry(data["k"], data.get("e"))


class Incremental:
    """Skip what has not changed since its last successful dispatch; keep that state sorted.

    The old state is read as a stream merged with the (sorted) listing; what this run keeps
    goes to two sorted temporary files — unchanged items as they are seen, dispatched items
    as their batches settle in order — and the new state is one more merge. Memory holds no
    more than the in-flight window, whatever the number of keys.
    """

    def __init__(self, store: Store, *, start_after: str | None) -> None:
        self.store = store
        self.start_after = start_after
        self._old: Iterator[_Entry] | None = None
        self._head: _Entry | None = None
        self._unchanged: IO[str] = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
        self._dispatched: IO[str] = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
        self.skipped = 0

    def changed(self, item: Item) -> bool:
        """True when the item must be dispatched; an unchanged one is noted and skipped."""
        if self._old is None:
            self._old = _entries(self.store.lines(INCREMENTAL_KEY))
            self._head = next(self._old, None)
        while self._head is not None and self._head.key < item.key:
            self._head = next(self._old, None)
        if self._head is not None and self._head.key == item.key and self._head.etag == item.etag:
            self._unchanged.write(json.dumps({"k": item.key, "e": item.etag}) + "\n")
            self.skipped += 1
            return False
        return True

    def dispatched(self, items: tuple[Item, ...]) -> None:
        """Called in key order, for batches that settled as dispatched."""
        for item in items:
            self._dispatched.write(json.dumps({"k": item.key, "e": item.etag}) + "\n")

    def commit(self, end: str | None) -> int:
        """Write the new state: kept entries up to `end` (None: all), old ones around them."""
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", delete=False, suffix=".jsonl"
        ) as out:
            path = Path(out.name)
            count = 0

            def write(entry: _Entry) -> None:
                nonlocal count
                out.write(json.dumps({"k": entry.key, "e": entry.etag}) + "\n")
                count += 1

            old = _entries(self.store.lines(INCREMENTAL_KEY))
            for entry in old:
                if self.start_after is None or entry.key > self.start_after:
                    pending: _Entry | None = entry
                    break
                write(entry)
            else:
                pending = None
            for entry in _merge(self._rewind(self._unchanged), self._rewind(self._dispatched)):
                if end is not None and entry.key > end:
                    continue
                write(entry)
            if end is not None:
                rest = [pending] if pending is not None else []
                for entry in (*rest, *old):
                    if entry.key > end:
                        write(entry)
        try:
            self.store.put_file(INCREMENTAL_KEY, path)
        finally:
            path.unlink(missing_ok=True)
        return count

    @staticmethod
    def _rewind(handle: IO[str]) -> Iterator[_Entry]:
        handle.flush()
        handle.seek(0)
        for line in handle:
            data = json.loads(line)
            yield _Entry(data["k"], data.get("e"))

    def close(self) -> None:
        self._unchanged.close()
        self._dispatched.close()


def _merge(a: Iterator[_Entry], b: Iterator[_Entry]) -> Iterator[_Entry]:
    x, y = next(a, None), next(b, None)
    while x is not None or y is not None:
        if y is None or (x is not None and x.key <= y.key):
            assert x is not None
            yield x
            x = next(a, None)
        else:
            yield y
            y = next(b, None)
