"""The run record, and the one module that knows the state layout.

Layout under the state location:

    lease.json                      who runs now, and until when (hopper.runstate.lease)
    active.json                     the run in progress: a crashed one is resumed from here
    incremental.jsonl               sorted {"k": key, "e": etag} of the last successful dispatches
    runs/RUN_ID/summary.json        the run's configuration, status and counts
    runs/RUN_ID/checkpoint.json     the cursor: every batch up to it has settled
    runs/RUN_ID/ledger              the log of batch outcomes, one line each (a store's Log:
                                    ledger.jsonl in a folder, ledger/NNNNNN.jsonl parts on S3)

Everything else reads and writes these through the functions here: load_run, run_cursor,
active_run, ledger_lines, list_runs, report, unsettled_items, and RunRecord for a run in
progress.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from hopper.config import RunConfig
from hopper.errors import InvalidInput
from hopper.items import DISPATCHED, Item, Outcome
from hopper.runstate.store import Log, Store

LEASE_KEY = "lease.json"
ACTIVE_KEY = "active.json"
INCREMENTAL_KEY = "incremental.jsonl"
RUNS = "runs/"


def _run_key(run_id: str, name: str) -> str:
    return f"{RUNS}{run_id}/{name}"


# What makes two runs "the same job", so that a crashed one may be resumed by the next.
_IDENTITY = ("source", "target", "mode", "include", "exclude", "min_size", "max_size",
             "modified_after", "modified_before", "batch_size", "invocation_type", "payload",
             "incremental")  # fmt: skip


def config_document(config: RunConfig) -> dict[str, Any]:
    """The run's options as JSON, enough to run it again (retry) or recognise it (resume)."""
    out: dict[str, Any] = {}
    for name in RunConfig.field_names():
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
    """Writes one run's ledger and checkpoint as it goes, through the store's Log: in a folder
    each line is appended at once; on S3 a writer thread puts them in parts, and the run never
    waits on S3."""

    def __init__(self, store: Store, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self._summary_key = _run_key(run_id, "summary.json")
        self._checkpoint_key = _run_key(run_id, "checkpoint.json")
        self._ledger: Log | None = None

    def start(self, config: RunConfig, **extra: Any) -> None:
        previous = load_run(self.store, self.run_id) or {}
        document = {
            "run_id": self.run_id,
            "status": "running",
            "started_at": previous.get("started_at") or _now(),
            "config": config_document(config),
            **extra,
        }
        self.store.put(self._summary_key, _json(document))
        self.store.put(
            ACTIVE_KEY, _json({"run_id": self.run_id, "fingerprint": fingerprint(config)})
        )
        # A resumed run adds to the ledger its earlier segments wrote.
        self._ledger = self.store.log(_run_key(self.run_id, "ledger"))

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
        assert self._ledger is not None, "start() opens the ledger"
        self._ledger.append(_json(value) + b"\n")

    def checkpoint(self, cursor: str | None) -> None:
        """Every batch up to `cursor` has settled; a resumed run starts after it. Written
        after the ledger lines recorded so far: a checkpoint never claims more than those."""
        assert self._ledger is not None, "start() opens the ledger"
        self._ledger.put_after(self._checkpoint_key, _json({"cursor": cursor, "at": time.time()}))

    def flush(self) -> None:
        """Wait until everything recorded so far is written."""
        if self._ledger is not None:
            self._ledger.flush()

    def finish(self, summary: dict[str, Any], *, keep_active: bool) -> None:
        error = self._ledger.close() if self._ledger is not None else None
        previous = load_run(self.store, self.run_id) or {}
        document = {
            **previous,
            **summary,
            # A resumed run keeps the start of its first segment.
            "started_at": previous.get("started_at") or summary.get("started_at"),
            "finished_at": _now(),
        }
        if error is not None:
            document["ledger_error"] = str(error)
        self.store.put(self._summary_key, _json(document))
        if not keep_active:
            self.store.delete(ACTIVE_KEY)


def _read_json(store: Store, key: str) -> Any:
    found = store.get(key)
    return json.loads(found[0]) if found else None


def load_run(store: Store, run_id: str) -> dict[str, Any] | None:
    """A run's summary document (its configuration, status and counts), or None."""
    document = _read_json(store, _run_key(run_id, "summary.json"))
    return document if isinstance(document, dict) else None


def run_cursor(store: Store, run_id: str) -> str | None:
    """The run's checkpointed cursor: every batch up to it has settled."""
    checkpoint = _read_json(store, _run_key(run_id, "checkpoint.json")) or {}
    cursor = checkpoint.get("cursor")
    return str(cursor) if cursor is not None else None


def active_run(store: Store) -> dict[str, Any] | None:
    """{"run_id", "fingerprint"} of the run that started here and did not finish, or None."""
    active = _read_json(store, ACTIVE_KEY)
    return active if isinstance(active, dict) else None


def ledger_lines(store: Store, run_id: str) -> Iterator[dict[str, Any]]:
    for raw in store.log_lines(_run_key(run_id, "ledger")):
        yield json.loads(raw)


def list_runs(store: Store) -> list[dict[str, Any]]:
    runs = []
    for key in store.keys(RUNS):
        if key.endswith("/summary.json") and key.count("/") == 2:
            document = _read_json(store, key) or {}
            runs.append(document)
    return sorted(runs, key=lambda r: str(r.get("started_at", "")), reverse=True)


def report(store: Store, run_id: str) -> dict[str, Any]:
    """Counts and failures of a run, recomputed from its ledger (the record of truth)."""
    summary = load_run(store, run_id)
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
        "cursor": run_cursor(store, run_id),
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
