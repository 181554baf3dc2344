"""The run record, and the one module that knows the state layout.

Layout under the state location:

    lease.json                      who runs now, and until when (hopper.runstate.lease)
    active.json                     the run in progress: a crashed one is resumed from here
    incremental/JOB.jsonl           per job: sorted {"k": key, "e": etag} of what its workers
                                    did (runstate.incremental)
    runs/RUN_ID/summary.json        the run's configuration, status and counts
    runs/RUN_ID/checkpoint.json     the cursor: every batch up to it has settled
    runs/RUN_ID/ledger              the log of batch outcomes, one line each (a store's Log:
                                    ledger.jsonl in a folder, ledger/NNNNNN.jsonl parts on S3)
    runs/RUN_ID/outcomes/*.jsonl    the workers' destination records, as collected

Everything else reads and writes these through the functions here: load_run, run_cursor,
active_run, ledger_lines, list_runs, report, results, unsettled_items, add_worker_records,
worker_records, and RunRecord for a run in progress.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hopper.config import RunConfig
from hopper.errors import InvalidInput
from hopper.event import idempotency_key
from hopper.items import (
    DISPATCHED,
    FAILED,
    LOST,
    NOT_DISPATCHED,
    PENDING,
    PROCESSED,
    WORKER_FAILED,
    Item,
    Outcome,
)
from hopper.runstate.store import Log, Store

LEASE_KEY = "lease.json"
ACTIVE_KEY = "active.json"
# The run that finished last: what `hopper status` shows without listing every run.
LAST_KEY = "last.json"
# Before incremental state was kept per job, one file held it, for objects runs.
LEGACY_INCREMENTAL_KEY = "incremental.jsonl"
RUNS = "runs/"
# A worker result larger than this is cut in the ledger (and marked so).
RESULT_LIMIT = 256 * 1024
# The wall clock that decides when a pending batch is lost (tests move it on).
clock = time.time
# How many failures a report lists (the rest are counted), and keys of each.
FAILURES_SHOWN = 50
KEYS_SHOWN = 5


def _run_key(run_id: str, name: str) -> str:
    return f"{RUNS}{run_id}/{name}"


# What makes two runs "the same job", so that a crashed one may be resumed by the next.
_IDENTITY = ("source", "target", "mode", "include", "exclude", "min_size", "max_size",
             "modified_after", "modified_before", "batch_size", "invocation_type", "payload",
             "incremental")  # fmt: skip


# What makes two runs one job for the incremental state: not how they batch or send.
_INCREMENTAL_IDENTITY = ("source", "mode", "target", "include", "exclude", "min_size", "max_size",
                         "modified_after", "modified_before")  # fmt: skip


def incremental_keys(store: Store, config: RunConfig) -> tuple[str, str]:
    """Where the job's incremental state is written, and where it is read from: the same, but
    for an objects job without one yet, whose state may still be in the file that held it
    before it was kept per job."""
    document = config_document(config)
    identity = {key: document.get(key) for key in _INCREMENTAL_IDENTITY}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    key = f"incremental/{digest}.jsonl"
    legacy = (
        config.mode == "objects"
        and store.get(key) is None
        and store.get(LEGACY_INCREMENTAL_KEY) is not None
    )
    return key, LEGACY_INCREMENTAL_KEY if legacy else key


def config_document(config: RunConfig) -> dict[str, Any]:
    """The run's options as JSON, enough to run it again (retry, from any folder) or
    recognise it (resume)."""
    config = config.anchored()
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
        line: dict[str, Any] = {
            "batch": outcome.batch.index,
            "status": outcome.status,
            "attempts": outcome.attempts,
            # Matches a destination record to this batch: its event carried the same key.
            "key": idempotency_key(self.run_id, outcome.batch),
            "at": round(time.time(), 3),
        }
        # What is unknown or empty is left out: a ledger holds a line per batch.
        for name in ("worker", "request_id", "error_type", "error"):
            value = getattr(outcome, name)
            if value is not None:
                line[name] = value
        line["items"] = [item.to_event() for item in outcome.batch.items]
        if outcome.result is not None:
            line.update(kept_result(outcome.result))
        self._line(line)

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
            self.store.put(LAST_KEY, _json({"run_id": self.run_id, "finished_at": _now()}))
            self.store.delete(ACTIVE_KEY)


def kept_result(result: Any) -> dict[str, Any]:
    """A worker's result as the ledger keeps it: whole up to RESULT_LIMIT bytes of JSON; past
    that, the first RESULT_LIMIT bytes as text, and `result_cut` with the whole size."""
    encoded = json.dumps(result, default=str, ensure_ascii=False).encode("utf-8")
    if len(encoded) <= RESULT_LIMIT:
        return {"result": result}
    head = encoded[:RESULT_LIMIT].decode("utf-8", "ignore")
    return {"result": head, "result_cut": len(encoded)}


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


def latest_run(store: Store) -> dict[str, Any] | None:
    """The run going on now, or else the one that finished last, without listing the runs
    (a state kept before last.json existed falls back to the listing)."""
    for key in (ACTIVE_KEY, LAST_KEY):
        pointer = _read_json(store, key)
        if isinstance(pointer, dict) and pointer.get("run_id"):
            document = load_run(store, str(pointer["run_id"]))
            if document is not None:
                return document
    runs = list_runs(store)
    return runs[0] if runs else None


def list_runs(store: Store) -> list[dict[str, Any]]:
    runs = []
    for key in store.keys(RUNS):
        if key.endswith("/summary.json") and key.count("/") == 2:
            document = _read_json(store, key) or {}
            runs.append(document)
    return sorted(runs, key=lambda r: str(r.get("started_at", "")), reverse=True)


# ------------------------------------------------------------------ what the workers did


def add_worker_records(store: Store, run_id: str, records: list[dict[str, Any]]) -> None:
    """Keep destination records of one run: one object per call, under a name no other
    writer takes, so that collectors never need the run's lease. Durable when this returns."""
    name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.jsonl"
    store.put(_run_key(run_id, f"outcomes/{name}"), b"".join(_json(r) + b"\n" for r in records))


def worker_records(store: Store, run_id: str) -> dict[str, dict[str, Any]]:
    """The record that counts for each batch key: the same record twice counts once, and a
    success wins over a failure (Lambda retried the batch, and the retry succeeded)."""
    best: dict[str, dict[str, Any]] = {}
    for raw in store.log_lines(_run_key(run_id, "outcomes")):
        record = json.loads(raw)
        held = best.get(record["key"])
        if held is None or (held["worker"] != PROCESSED and record["worker"] == PROCESSED):
            best[record["key"]] = record
    return best


@dataclass(frozen=True)
class BatchLine:
    """One batch line of a ledger, as it stands now: `items` are those no later segment of the
    run sent again, `state` is the batch's fate (a BatchStatus, or for a dispatched batch its
    WorkerStatus when known), and `record` the destination record that told it, if any."""

    line: dict[str, Any]
    items: list[dict[str, Any]]
    state: str
    record: dict[str, Any] | None


# A batch's fate, when dispatch alone cannot know it: an event invoke nobody tracks.
UNKNOWN = "dispatched"
# The fates that retry sends again.
UNSETTLED = frozenset({FAILED, NOT_DISPATCHED, WORKER_FAILED, LOST})


def batch_lines(
    store: Store, run_id: str, *, document: dict[str, Any] | None = None, now: float | None = None
) -> Iterator[BatchLine | dict[str, Any]]:
    """The ledger's lines in order: notes as they are, batch lines as BatchLines.

    A run resumed (or continued by the Lambda handler) from cursor C sends every item after C
    again, so what an earlier segment recorded past C is superseded: its items are left out
    here. The ledger is read twice, streaming: once for the segments' cursors, once for the
    lines. Pending batches past their lost_after (the run's tracking) are lost.
    """
    cursors = [
        "" if line.get("cursor") is None else str(line["cursor"])
        for line in ledger_lines(store, run_id)
        if line.get("event") in ("resumed", "continued")
    ]
    # limits[i]: the smallest cursor of the segments after the i-th one; its items beyond it
    # were sent again ("" supersedes everything; None: nothing after).
    limits: list[str | None] = [None] * (len(cursors) + 1)
    for i in range(len(cursors) - 1, -1, -1):
        later = limits[i + 1]
        limits[i] = cursors[i] if later is None else min(cursors[i], later)
    document = document if document is not None else load_run(store, run_id) or {}
    tracked_by = document.get("tracked_by") or {}
    lost_after = tracked_by.get("lost_after")
    now = clock() if now is None else now
    records = worker_records(store, run_id) if tracked_by else {}
    segment = 0
    for line in ledger_lines(store, run_id):
        if "event" in line:
            if line["event"] in ("resumed", "continued"):
                segment += 1
            yield line
            continue
        limit = limits[segment]
        items = line["items"]
        if limit is not None:
            items = [item for item in items if item["key"] <= limit]
            if not items:
                continue
        state, record = _fate(line, records, lost_after, now)
        yield BatchLine(line, items, state, record)


def _fate(
    line: dict[str, Any],
    records: dict[str, dict[str, Any]],
    lost_after: float | None,
    now: float,
) -> tuple[str, dict[str, Any] | None]:
    if line["status"] != DISPATCHED:
        return str(line["status"]), None
    worker = line.get("worker")
    if worker in (PROCESSED, WORKER_FAILED):
        return str(worker), None
    if worker != PENDING:
        return UNKNOWN, None
    record = records.get(line.get("key", ""))
    if record is not None:
        return str(record["worker"]), record
    if lost_after is not None and now > float(line.get("at") or 0) + float(lost_after):
        return LOST, None
    return PENDING, None


def settled_status(status: str | None, counts: dict[str, int]) -> str | None:
    """A recorded run's status, once its workers' outcomes are known: a run that finished
    without a dispatch failure has failed after all if a worker failed or a batch was lost."""
    if status in ("succeeded", "incomplete") and (counts["worker_failed"] or counts["lost"]):
        return "failed"
    return status


def report(store: Store, run_id: str, *, now: float | None = None) -> dict[str, Any]:
    """Counts and failures of a run, recomputed from its ledger and its workers' records (the
    record of truth)."""
    summary = load_run(store, run_id)
    if summary is None:
        raise InvalidInput(f"no run {run_id!r} in {store.location}")
    states = [str(state) for state in (DISPATCHED, FAILED, NOT_DISPATCHED)]
    counts = dict.fromkeys([*states, *map(str, (PROCESSED, WORKER_FAILED, PENDING, LOST))], 0)
    batches = dict.fromkeys(states, 0)
    failures: list[dict[str, Any]] = []
    omitted = 0
    events: list[dict[str, Any]] = []
    for entry in batch_lines(store, run_id, document=summary, now=now):
        if not isinstance(entry, BatchLine):
            events.append(entry)
            continue
        line, size = entry.line, len(entry.items)
        counts[line["status"]] += size
        batches[line["status"]] += 1
        if entry.state in counts and entry.state not in states:
            counts[entry.state] += size
        if entry.state not in UNSETTLED:
            continue
        if len(failures) >= FAILURES_SHOWN:
            omitted += 1
            continue
        record = entry.record or {}
        failures.append(
            {key: line.get(key) for key in ("batch", "attempts", "request_id")}
            | {
                "status": entry.state,
                "error_type": record.get("error_type", line.get("error_type")),
                "error": record.get("error", line.get("error")),
                "keys": [item["key"] for item in entry.items[:KEYS_SHOWN]],
                "items": size,
            }
        )
    return {
        "run_id": run_id,
        "status": settled_status(summary.get("status"), counts),
        "started_at": summary.get("started_at"),
        "finished_at": summary.get("finished_at"),
        "retry_of": summary.get("retry_of"),
        "source": summary.get("config", {}).get("source"),
        "target": summary.get("config", {}).get("target"),
        # Item counts from the ledger, at the top for scripts; per batch under "ledger".
        **counts,
        "tracking": bool(summary.get("tracking", True)),
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
        "failures_omitted": omitted,
    }


WORKER_COUNTS = ("processed", "worker_failed", "pending", "lost")


def refresh(store: Store, run_id: str, *, now: float | None = None) -> dict[str, Any]:
    """Recount a run from its ledger and its workers' records into its summary document, so
    that `runs` and the summary agree with `report`; returns the report."""
    document = report(store, run_id, now=now)
    summary = load_run(store, run_id) or {}
    summary.update({key: document[key] for key in (DISPATCHED, FAILED, NOT_DISPATCHED)})
    summary.update({key: document[key] for key in WORKER_COUNTS})
    summary["status"] = document["status"]
    store.put(_run_key(run_id, "summary.json"), _json(summary))
    return document


def results(store: Store, run_id: str, *, now: float | None = None) -> Iterator[dict[str, Any]]:
    """Every batch of a run that still counts: its keys, its fate, and its result or error."""
    if load_run(store, run_id) is None:
        raise InvalidInput(f"no run {run_id!r} in {store.location}")
    for entry in batch_lines(store, run_id, now=now):
        if not isinstance(entry, BatchLine):
            continue
        line, record = entry.line, entry.record or {}
        out: dict[str, Any] = {
            "batch": line["batch"],
            "keys": [item["key"] for item in entry.items],
            "status": entry.state,
            "attempts": line.get("attempts"),
            "request_id": record.get("request_id") or line.get("request_id"),
        }
        source = record or line
        if entry.state in UNSETTLED:
            out["error_type"] = source.get("error_type")
            out["error"] = source.get("error")
        elif "result" in source:
            out["result"] = source["result"]
            if "result_cut" in source:
                out["result_cut"] = source["result_cut"]
        yield out


def retry_set(store: Store, run_id: str) -> tuple[list[Item], bool]:
    """What a retry of `run_id` sends: its unsettled items that no earlier retry of it (or of
    those) has sent since, in key order; and whether its listing is done, by it or by such a
    retry (if not, a retry also lists the rest after its cursor)."""
    document = load_run(store, run_id)
    if document is None:
        raise InvalidInput(f"no run {run_id!r} in {store.location}")
    retries: list[dict[str, Any]] = []
    wanted = {run_id}
    for doc in sorted(list_runs(store), key=lambda r: str(r.get("started_at", ""))):
        if doc.get("retry_of") in wanted:
            retries.append(doc)
            wanted.add(str(doc["run_id"]))
    sent: set[str] = set()
    for retry in retries:
        for entry in batch_lines(store, str(retry["run_id"]), document=retry):
            if isinstance(entry, BatchLine) and entry.state not in UNSETTLED:
                sent.update(item["key"] for item in entry.items)
    items = [item for item in unsettled_items(store, run_id) if item.key not in sent]
    complete = bool(document.get("listing_complete")) or any(
        r.get("listing_complete") for r in retries
    )
    return items, complete


def unsettled_items(store: Store, run_id: str) -> Iterator[Item]:
    """Every item of a run that failed, was not dispatched, failed in its worker or was lost,
    in key order, deduplicated. Holds one entry per such item: a retry set is small next to a
    listing."""
    chosen: dict[str, dict[str, Any]] = {}
    for entry in batch_lines(store, run_id):
        if isinstance(entry, BatchLine) and entry.state in UNSETTLED:
            for item in entry.items:
                chosen[item["key"]] = item
    for key in sorted(chosen):
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
