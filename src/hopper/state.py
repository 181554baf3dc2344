"""Run state in a store: each run's ledger, summary and checkpoint, and the incremental state.

Layout under the state location:

    lease.json                      who runs now (see lease.py)
    active.json                     the run in progress: a crashed one is resumed from here
    incremental.jsonl               sorted {"k": key, "e": etag} of the last successful dispatches
    runs/RUN_ID/summary.json        the run's configuration, status and counts
    runs/RUN_ID/checkpoint.json     the cursor: every batch up to it has settled
    runs/RUN_ID/ledger/PART.jsonl   one line per batch outcome (S3: a part per flush)
    runs/RUN_ID/ledger.jsonl        (local folders: one file, appended line by line)
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from hopper.config import RunConfig
from hopper.dispatch import DISPATCHED, Outcome
from hopper.errors import InvalidInput
from hopper.items import Item
from hopper.store import LocalStore, Store

log = logging.getLogger(__name__)

ACTIVE_KEY = "active.json"
INCREMENTAL_KEY = "incremental.jsonl"
RUNS = "runs/"

# What makes two runs "the same job", so that a crashed one may be resumed by the next.
_IDENTITY = ("source", "target", "mode", "include", "exclude", "min_size", "max_size",
             "modified_after", "modified_before", "batch_size", "invocation_type", "payload",
             "incremental")  # fmt: skip


def config_document(config: RunConfig) -> dict[str, Any]:
    """The run's options as JSON, enough to run it again (retry) or recognise it (resume)."""
    out: dict[str, Any] = {}
    for name in RunConfig.option_names():
        value = getattr(config, name)
        if value is None or name in ("run_id", "region", "profile"):
            continue
        if hasattr(value, "isoformat"):
            value = value.isoformat()
        elif isinstance(value, tuple):
            value = list(value)
        elif name == "payload":
            value = dict(value)
        out[name] = value
    return out


def fingerprint(config: RunConfig) -> str:
    document = config_document(config)
    identity = {key: document.get(key) for key in _IDENTITY}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _json(value: Any) -> bytes:
    return json.dumps(value, default=str).encode("utf-8")


class RunRecord:
    """Writes one run's ledger and checkpoint as it goes.

    In a folder each ledger line is appended and each checkpoint replaced at once. On S3 a
    writer thread puts what has accumulated since its last put (the new ledger lines as one
    part, then the newest cursor), so the run never waits on S3 and a crash loses only what
    the writer had not yet put: about one round trip's worth of batches.
    """

    def __init__(self, store: Store, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self.base = f"{RUNS}{run_id}/"
        self._local = isinstance(store, LocalStore)
        self._part = 0
        self._cv = threading.Condition()
        self._lines: list[bytes] = []
        self._cursor: tuple[str | None] | None = None
        self._busy = False
        self._closing = False
        self._error: BaseException | None = None
        self._writer: threading.Thread | None = None

    def start(self, config: RunConfig, **extra: Any) -> None:
        previous = read_json(self.store, self.base + "summary.json") or {}
        document = {
            "run_id": self.run_id,
            "status": "running",
            "started_at": previous.get("started_at") or _now(),
            "config": config_document(config),
            **extra,
        }
        self.store.put(self.base + "summary.json", _json(document))
        self.store.put(
            ACTIVE_KEY, _json({"run_id": self.run_id, "fingerprint": fingerprint(config)})
        )
        if not self._local:
            # A resumed run adds parts after those its earlier segments wrote.
            self._part = sum(1 for _ in self.store.keys(self.base + "ledger/"))
            self._writer = threading.Thread(
                target=self._write_loop, name="hopper-ledger", daemon=True
            )
            self._writer.start()

    def record(self, outcome: Outcome) -> None:
        self._line(
            {
                "batch": outcome.batch.index,
                "status": outcome.status,
                "attempts": outcome.attempts,
                "request_id": outcome.request_id,
                "error_type": outcome.error_type,
                "error": outcome.error,
                "items": [item.to_event() for item in outcome.batch.items],
            }
        )

    def note(self, **event: Any) -> None:
        """A line that is not a batch outcome: why the run stopped, when it resumed."""
        self._line({"event": event.pop("event"), "at": time.time(), **event})

    def _line(self, value: dict[str, Any]) -> None:
        line = _json(value) + b"\n"
        if self._local:
            assert isinstance(self.store, LocalStore)
            self.store.append_line(self.base + "ledger.jsonl", line)
            return
        with self._cv:
            self._lines.append(line)
            self._cv.notify_all()

    def checkpoint(self, cursor: str | None) -> None:
        """Every batch up to `cursor` has settled; a resumed run starts after it."""
        if self._local:
            self.store.put(
                self.base + "checkpoint.json", _json({"cursor": cursor, "at": time.time()})
            )
            return
        with self._cv:
            self._cursor = (cursor,)
            self._cv.notify_all()

    def _write_loop(self) -> None:
        while True:
            with self._cv:
                while not (self._lines or self._cursor or self._closing):
                    self._cv.wait()
                if not (self._lines or self._cursor):
                    return
                lines, self._lines = self._lines, []
                cursor, self._cursor = self._cursor, None
                self._busy = True
            try:
                # The ledger goes first: a checkpoint never claims more than the ledger shows.
                if lines:
                    self._part += 1
                    self.store.put(f"{self.base}ledger/{self._part:06d}.jsonl", b"".join(lines))
                if cursor is not None:
                    self.store.put(
                        self.base + "checkpoint.json",
                        _json({"cursor": cursor[0], "at": time.time()}),
                    )
            except BaseException as exc:  # noqa: BLE001 - reported when the run finishes
                log.warning("could not write the ledger of %s: %s", self.run_id, exc)
                self._error = exc
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def flush(self) -> None:
        """Wait until everything recorded so far is written."""
        if self._local:
            return
        with self._cv:
            while self._lines or self._cursor or self._busy:
                self._cv.wait()

    def finish(self, summary: dict[str, Any], *, keep_active: bool) -> None:
        if self._writer is not None:
            with self._cv:
                self._closing = True
                self._cv.notify_all()
            self._writer.join()
        previous = read_json(self.store, self.base + "summary.json") or {}
        document = {
            **previous,
            **summary,
            # A resumed run keeps the start of its first segment.
            "started_at": previous.get("started_at") or summary.get("started_at"),
            "finished_at": _now(),
        }
        if self._error is not None:
            document["ledger_error"] = str(self._error)
        self.store.put(self.base + "summary.json", _json(document))
        if not keep_active:
            self.store.delete(ACTIVE_KEY)


def read_json(store: Store, key: str) -> Any:
    found = store.get(key)
    return json.loads(found[0]) if found else None


def ledger_lines(store: Store, run_id: str) -> Iterator[dict[str, Any]]:
    base = f"{RUNS}{run_id}/"
    keys = [
        k for k in store.keys(base) if k == base + "ledger.jsonl" or k.startswith(base + "ledger/")
    ]
    for key in keys:
        for raw in store.lines(key):
            if raw.strip():
                yield json.loads(raw)


def list_runs(store: Store) -> list[dict[str, Any]]:
    runs = []
    for key in store.keys(RUNS):
        if key.endswith("/summary.json") and key.count("/") == 2:
            document = read_json(store, key) or {}
            runs.append(document)
    return sorted(runs, key=lambda r: str(r.get("started_at", "")), reverse=True)


def report(store: Store, run_id: str) -> dict[str, Any]:
    """Counts and failures of a run, recomputed from its ledger (the record of truth)."""
    summary = read_json(store, f"{RUNS}{run_id}/summary.json")
    if summary is None:
        raise InvalidInput(f"no run {run_id!r} in {store.location}")
    counts = {"dispatched": 0, "failed": 0, "not_dispatched": 0}
    batches = {"dispatched": 0, "failed": 0, "not_dispatched": 0}
    failures: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for line in ledger_lines(store, run_id):
        if "event" in line:
            events.append(line)
            continue
        status = line["status"]
        counts[status] += len(line["items"])
        batches[status] += 1
        if status != DISPATCHED and len(failures) < 50:
            failures.append(
                {
                    key: line[key]
                    for key in ("batch", "status", "attempts", "error_type", "error", "request_id")
                }
                | {"keys": [item["key"] for item in line["items"][:5]], "items": len(line["items"])}
            )
    checkpoint = read_json(store, f"{RUNS}{run_id}/checkpoint.json") or {}
    return {
        "run_id": run_id,
        "status": summary.get("status"),
        "started_at": summary.get("started_at"),
        "finished_at": summary.get("finished_at"),
        "retry_of": summary.get("retry_of"),
        "source": summary.get("config", {}).get("source"),
        "target": summary.get("config", {}).get("target"),
        # Item counts from the ledger, at the top for scripts; per batch under "ledger".
        **counts,
        "ledger": {"items": counts, "batches": batches},
        "summary": {
            k: summary.get(k)
            for k in (
                "listed",
                "selected",
                "dispatched",
                "failed",
                "not_dispatched",
                "stopped",
                "error",
            )
        },
        "cursor": checkpoint.get("cursor"),
        "events": events,
        "failures": failures,
    }


def unsettled_items(store: Store, run_id: str) -> Iterator[Item]:
    """Every item of a run's failed or not-dispatched batches, in key order, deduplicated.

    Holds one entry per such item: a retry set is small next to a listing.
    """
    chosen: dict[str, dict[str, Any]] = {}
    done: set[str] = set()
    for line in ledger_lines(store, run_id):
        if "event" in line:
            continue
        for item in line["items"]:
            if line["status"] == DISPATCHED:
                done.add(item["key"])
            else:
                chosen[item["key"]] = item
    for key in sorted(k for k in chosen if k not in done):
        yield item_from_event(chosen[key])


def item_from_event(data: dict[str, Any]) -> Item:
    modified = data.get("last_modified")
    return Item(
        key=data["key"],
        size=data.get("size"),
        etag=data.get("etag"),
        last_modified=datetime.fromisoformat(modified) if modified else None,
        path=data.get("path"),
    )


# ------------------------------------------------------------------------------ incremental


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
