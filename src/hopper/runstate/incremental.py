"""Incremental runs: skip what has not changed since its worker last succeeded.

Each job (source, mode, target and filters) keeps one sorted file of {"k": key, "e": etag}
lines (runstate.record.incremental_key), merged with the sorted listing as both stream past.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from hopper.event import idempotency_key
from hopper.items import DISPATCHED, LOST, PENDING, PROCESSED, WORKER_FAILED, Item, Outcome
from hopper.runstate import record as record_module
from hopper.runstate.record import load_run, worker_records
from hopper.runstate.store import Store


@dataclass
class _Entry:
    key: str
    etag: str | None
    # [run id, batch key, dispatched at] while the worker's outcome has not come: neither
    # sent again nor done until it does, or the batch is lost.
    pending: list[Any] | None = None

    def line(self) -> str:
        data: dict[str, Any] = {"k": self.key, "e": self.etag}
        if self.pending is not None:
            data["p"] = self.pending
        return json.dumps(data) + "\n"


def _entries(lines: Iterator[bytes] | IO[str]) -> Iterator[_Entry]:
    for raw in lines:
        if raw.strip():
            data = json.loads(raw)
            yield _Entry(data["k"], data.get("e"), data.get("p"))


class Incremental:
    """Skip what has not changed since its worker last succeeded; keep that state sorted.

    An item is done once its worker succeeded: at once for local targets and synchronous
    invokes, when its destination record arrives for tracked event invokes (until then it is
    pending: neither sent again nor done), and at dispatch for untracked event invokes, which
    report nothing more. A worker failure, a lost batch or a failed dispatch is sent again on
    the next run.

    The old state is read as a stream merged with the (sorted) listing; what this run keeps
    goes to two sorted temporary files (unchanged items as they are seen, dispatched items
    as their batches settle in order) and the new state is one more merge. Memory holds no
    more than the in-flight window and one run's worker records at a time, whatever the
    number of keys.
    """

    def __init__(
        self,
        store: Store,
        key: str,
        *,
        run_id: str,
        start_after: str | None,
        read_from: str | None = None,
    ) -> None:
        self.store = store
        self.key = key
        self.read_from = read_from or key
        self.run_id = run_id
        self.start_after = start_after
        self._old: Iterator[_Entry] | None = None
        self._head: _Entry | None = None
        self._unchanged: IO[str] = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
        self._dispatched: IO[str] = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
        # The worker records of the one run whose pending entries are being resolved.
        self._records: tuple[str, dict[str, dict[str, Any]], float | None] | None = None
        self.skipped = 0

    def _old_lines(self) -> Iterator[bytes]:
        return self.store.lines(self.read_from)

    def changed(self, item: Item) -> bool:
        """True when the item must be dispatched; an unchanged one is noted and skipped."""
        if self._old is None:
            self._old = _entries(self._old_lines())
            self._head = next(self._old, None)
        while self._head is not None and self._head.key < item.key:
            self._head = next(self._old, None)
        head = self._head
        if head is None or head.key != item.key or head.etag != item.etag:
            return True
        if head.pending is not None:
            fate = self._fate(head.pending)
            if fate not in (PROCESSED, PENDING):
                return True  # the worker failed, or the batch was lost: send it again
            head = _Entry(head.key, head.etag, head.pending if fate == PENDING else None)
        self._unchanged.write(head.line())
        self.skipped += 1
        return False

    def _fate(self, pending: list[Any]) -> str:
        run_id, batch_key, at = str(pending[0]), str(pending[1]), float(pending[2])
        if self._records is None or self._records[0] != run_id:
            document = load_run(self.store, run_id) or {}
            lost_after = (document.get("tracked_by") or {}).get("lost_after")
            self._records = (run_id, worker_records(self.store, run_id), lost_after)
        _, records, lost_after = self._records
        record = records.get(batch_key)
        if record is not None:
            return str(record["worker"])
        if lost_after is not None and record_module.clock() > at + float(lost_after):
            return str(LOST)
        return str(PENDING)

    def settled(self, outcome: Outcome) -> None:
        """Called in key order for each settled batch: what it makes done, or pending."""
        if outcome.status is not DISPATCHED or outcome.worker is WORKER_FAILED:
            return
        pending = None
        if outcome.worker is PENDING:
            pending = [self.run_id, idempotency_key(self.run_id, outcome.batch), time.time()]
        for item in outcome.batch.items:
            self._dispatched.write(_Entry(item.key, item.etag, pending).line())

    def commit(self, end: str | None) -> int:
        """Write the new state: kept entries up to `end` (None: all), old ones around them."""
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", delete=False, suffix=".jsonl"
        ) as out:
            path = Path(out.name)
            count = 0

            def write(entry: _Entry) -> None:
                nonlocal count
                out.write(entry.line())
                count += 1

            old = _entries(self._old_lines())
            for entry in old:
                if self.start_after is None or entry.key > self.start_after:
                    waiting: _Entry | None = entry
                    break
                write(entry)
            else:
                waiting = None
            for entry in _merge(self._rewind(self._unchanged), self._rewind(self._dispatched)):
                if end is not None and entry.key > end:
                    continue
                write(entry)
            if end is not None:
                rest = [waiting] if waiting is not None else []
                for entry in (*rest, *old):
                    if entry.key > end:
                        write(entry)
        try:
            self.store.put_file(self.key, path)
        finally:
            path.unlink(missing_ok=True)
        return count

    @staticmethod
    def _rewind(handle: IO[str]) -> Iterator[_Entry]:
        handle.flush()
        handle.seek(0)
        yield from _entries(handle)

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
