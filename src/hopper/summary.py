"""What a run or a plan reports: counts, the first failures and results, and the cursor."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from hopper.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from hopper.items import (
    DEADLINE_REACHED,
    DISPATCHED,
    FAILED,
    PENDING,
    PROCESSED,
    WORKER_FAILED,
    Outcome,
    Skipped,
    Stop,
    StopReason,
)

if TYPE_CHECKING:
    from hopper.inventory import Report

# How many failures, results and skipped entries a summary keeps; the rest are only counted.
SHOW = 20
KEYS_SHOWN = 5

# AWS Lambda request price, USD per million requests, all regions' x86 and arm64 alike.
# Source: https://aws.amazon.com/lambda/pricing/ ("Requests: $0.20 per 1M requests"),
# read 2026-11-27. Duration is not estimated: it depends on the worker.
LAMBDA_PRICE_PER_MILLION_REQUESTS_USD = 0.20
# S3 Standard LIST requests, USD per 1,000 requests (us-east-1).
# Source: https://aws.amazon.com/s3/pricing/ ("PUT, COPY, POST, LIST requests: $0.005 per
# 1,000 requests"), read 2026-11-27.
S3_LIST_PRICE_PER_THOUSAND_USD = 0.005
S3_KEYS_PER_LIST = 1000
# Same page: "GET, SELECT, and all other requests: $0.0004 per 1,000 requests", read
# 2026-11-30. An inventory report costs a GET per data file, plus the manifest and checksum.
S3_GET_PRICE_PER_THOUSAND_USD = 0.0004
# Amazon SQS standard queue requests, USD per million (the first million a month are free).
# Source: https://aws.amazon.com/sqs/pricing/ ("Standard Queues: $0.40 per million requests"
# for the first 100 billion a month), read 2026-11-30. Tracking costs per batch one request
# to deliver its record (Lambda's SendMessage), and a tenth of one each to receive and delete
# it, ten at a time; records over 64 KB count once per 64 KB.
SQS_PRICE_PER_MILLION_REQUESTS_USD = 0.40
SQS_REQUESTS_PER_TRACKED_BATCH = 1 + 2 / 10


@dataclass
class Counts:
    listed: int = 0
    skipped: int = 0
    unchanged: int = 0
    selected: int = 0
    batches: int = 0
    dispatched: int = 0
    dispatched_batches: int = 0
    failed: int = 0
    failed_batches: int = 0
    not_dispatched: int = 0
    # What the workers made of the dispatched items, as far as is known (see `tracking`).
    processed: int = 0
    worker_failed: int = 0
    pending: int = 0
    lost: int = 0


class RunStatus(StrEnum):
    RUNNING = "running"
    # Every selected item was dispatched, no worker is known to have failed, and the listing
    # is done. Items still pending do not stop a run from succeeding.
    SUCCEEDED = "succeeded"
    # Stopped early (deadline, Ctrl-C) with nothing failed: to be resumed from the cursor.
    INCOMPLETE = "incomplete"
    # Something failed (dispatch or a worker), was lost, or was left unsent for a reason other
    # than a deadline or Ctrl-C.
    FAILED = "failed"


@dataclass
class RunSummary:
    run_id: str
    source: str
    target: str
    mode: str
    started_at: str
    status: RunStatus = RunStatus.RUNNING
    duration_s: float = 0.0
    counts: Counts = field(default_factory=Counts)
    failures: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    listing_complete: bool = False
    cursor: str | None = None
    error: str | None = None
    stop: Stop | None = None
    # False once an item was dispatched whose worker outcome nobody will learn (an event invoke
    # without a results queue): `processed` and `pending` then do not cover every item.
    tracking: bool = True
    # How many failures and results the lists above left out (the ledger keeps them all).
    failures_omitted: int = 0
    results_omitted: int = 0
    # Runs with state: how many segments the run id has had (resumed, continued by Lambda);
    # the item counts then cover them all, as the ledger does.
    segments: int = 1
    # --wait-for-workers: the run waited, so the batches still pending fail it.
    waited: bool = False
    # This segment's own counts, when adopt() replaced `counts` with the whole run's.
    segment: Counts | None = None
    # Batches with an outcome so far, of every kind (not in the JSON: `counts` says it).
    settled_batches: int = 0

    @property
    def in_flight(self) -> int:
        """Batches taken from the plan that have no outcome yet: sent and waiting, or read
        ahead (the one-thread loop reads up to two windows ahead)."""
        return max(0, self.counts.batches - self.settled_batches)

    @property
    def ok(self) -> bool:
        return self.status is RunStatus.SUCCEEDED

    @property
    def exit_code(self) -> int:
        if self.ok and not (self.waited and self.counts.pending):
            return EXIT_OK
        if self.stop is not None and self.stop.reason is StopReason.INTERRUPTED:
            return EXIT_INTERRUPTED
        return EXIT_FAILED

    @property
    def stopped(self) -> str | None:
        """Why the run stopped early, in words; a fatal error is told by `error` instead."""
        if self.stop is None or self.stop.reason is StopReason.FATAL_ERROR:
            return None
        return self.stop.message

    def finish(
        self,
        *,
        exhausted: bool,
        deadline_reached: bool,
        stop: Stop | None,
        fatal: BaseException | None,
        cursor: str | None,
        duration_s: float,
    ) -> None:
        """Settle the counts, the cursor and the status once dispatch has ended."""
        counts = self.counts
        counts.not_dispatched = counts.selected - counts.dispatched - counts.failed
        self.listing_complete = exhausted
        if not exhausted or counts.not_dispatched:
            self.cursor = cursor
        if fatal is not None:
            self.error = str(fatal)
            stop = stop or Stop(StopReason.FATAL_ERROR, self.error)
        if deadline_reached and stop is None:
            stop = DEADLINE_REACHED
        self.stop = stop
        failed = counts.failed + counts.worker_failed + counts.lost
        if failed == 0 and counts.not_dispatched == 0 and exhausted and self.error is None:
            self.status = RunStatus.SUCCEEDED
        elif (
            self.error is None
            and failed == 0
            and stop is not None
            and stop.reason in (StopReason.DEADLINE, StopReason.INTERRUPTED)
        ):
            self.status = RunStatus.INCOMPLETE
        else:
            self.status = RunStatus.FAILED
        self.results.sort(key=lambda entry: entry["batch"])
        self.failures.sort(key=lambda entry: entry["batch"])
        self.duration_s = round(duration_s, 3)

    def record_skip(self, skip: Skipped) -> None:
        self.counts.skipped += 1
        if len(self.skipped) < SHOW:
            self.skipped.append({"key": skip.key, "reason": skip.reason})

    def adopt(self, report: dict[str, Any]) -> None:
        """Take the item counts and failures of the whole run from its ledger (a
        runstate.record report): earlier segments, and workers' outcomes that came later."""
        counts = self.counts
        self.segment = dataclasses.replace(counts)
        for name in (
            "dispatched", "failed", "not_dispatched", "processed", "worker_failed", "pending",
            "lost",
        ):  # fmt: skip
            setattr(counts, name, int(report[name]))
        batches = report.get("ledger", {}).get("batches", {})
        counts.dispatched_batches = int(batches.get("dispatched", counts.dispatched_batches))
        counts.failed_batches = int(batches.get("failed", counts.failed_batches))
        self.failures = list(report["failures"][:SHOW])
        self.failures_omitted = (
            len(report["failures"]) - len(self.failures) + int(report.get("failures_omitted", 0))
        )
        failed = counts.failed + counts.worker_failed + counts.lost
        if (self.status is RunStatus.SUCCEEDED and (failed or counts.not_dispatched)) or (
            self.status is RunStatus.INCOMPLETE and failed
        ):
            self.status = RunStatus.FAILED

    def record(self, outcome: Outcome) -> None:
        self.settled_batches += 1
        size = len(outcome.batch.items)
        counts = self.counts
        if outcome.status is DISPATCHED:
            counts.dispatched += size
            counts.dispatched_batches += 1
            worker = outcome.worker
            if worker is PROCESSED:
                counts.processed += size
            elif worker is PENDING:
                counts.pending += size
            elif worker is None:
                self.tracking = False
            if worker is WORKER_FAILED:
                counts.worker_failed += size
                self._failure(outcome, WORKER_FAILED)
            elif outcome.result is not None:
                if len(self.results) < SHOW:
                    self.results.append(
                        {
                            "batch": outcome.batch.index,
                            "keys": _shown(outcome),
                            "result": outcome.result,
                        }
                    )
                else:
                    self.results_omitted += 1
            return
        if outcome.status is FAILED:
            counts.failed += size
            counts.failed_batches += 1
        self._failure(outcome, outcome.status)

    def _failure(self, outcome: Outcome, state: str) -> None:
        if len(self.failures) >= SHOW:
            self.failures_omitted += 1
            return
        size = len(outcome.batch.items)
        self.failures.append(
            {
                "batch": outcome.batch.index,
                "status": state,
                "keys": _shown(outcome),
                "items": size,
                "attempts": outcome.attempts,
                "error_type": outcome.error_type,
                "error": outcome.error,
                "request_id": outcome.request_id,
            }
        )

    def to_dict(self) -> dict[str, Any]:
        data = {
            "run_id": self.run_id,
            "source": self.source,
            "target": self.target,
            "mode": self.mode,
            "started_at": self.started_at,
            "status": self.status,
            "duration_s": self.duration_s,
            "failures": self.failures,
            "failures_omitted": self.failures_omitted,
            "results": self.results,
            "results_omitted": self.results_omitted,
            "skipped": self.skipped,
            "listing_complete": self.listing_complete,
            "cursor": self.cursor,
            "error": self.error,
            "stopped": self.stopped,
            "tracking": self.tracking,
            "segments": self.segments,
        }
        # The counts come last; their `skipped` count takes the place of the list's key.
        data.update(asdict(self.counts))
        return data


def _shown(outcome: Outcome) -> list[str]:
    return [item.key for item in outcome.batch.items[:KEYS_SHOWN]]


@dataclass
class PlanSummary:
    source: str
    target: str | None
    mode: str
    invocation_type: str
    payload_limit: int
    listed: int = 0
    skipped: int = 0
    selected: int = 0
    batches: int = 0
    oversize: int = 0
    min_batch_items: int = 0
    max_batch_items: int = 0
    largest_payload_bytes: int = 0
    largest_payload_batch: int | None = None
    # Incremental: items unchanged since their worker succeeded, and the objects listed to
    # fingerprint datasets in prefixes mode (a listing of its own, priced below).
    unchanged: int = 0
    fingerprint_objects: int = 0
    listing_complete: bool = True
    # For an inventory source: the report (URL, date, age), its rows, and what listing the
    # bucket instead would have cost.
    inventory: dict[str, Any] | None = None
    first_keys: list[str] = field(default_factory=list)
    oversize_items: list[dict[str, Any]] = field(default_factory=list)

    @property
    def mean_batch_items(self) -> float:
        sent = self.batches - self.oversize
        return round((self.selected - self.oversize) / sent, 2) if sent else 0.0

    @property
    def invocations(self) -> int:
        return self.batches - self.oversize

    @property
    def estimated_lambda_cost_usd(self) -> float:
        return self.invocations * LAMBDA_PRICE_PER_MILLION_REQUESTS_USD / 1_000_000

    @property
    def estimated_list_cost_usd(self) -> float:
        if not self.source.startswith("s3://"):
            return 0.0
        requests = max(1, math.ceil(self.listed / S3_KEYS_PER_LIST))
        if self.fingerprint_objects:
            requests += math.ceil(self.fingerprint_objects / S3_KEYS_PER_LIST)
        return requests * S3_LIST_PRICE_PER_THOUSAND_USD / 1000

    @property
    def estimated_tracking_cost_usd(self) -> float:
        """What tracking event invokes to their workers' results costs in SQS requests."""
        requests = self.invocations * SQS_REQUESTS_PER_TRACKED_BATCH
        return requests * SQS_PRICE_PER_MILLION_REQUESTS_USD / 1_000_000

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean_batch_items"] = self.mean_batch_items
        data["invocations"] = self.invocations
        data["estimated_cost_usd"] = {
            "lambda_requests": round(self.estimated_lambda_cost_usd, 6),
            "s3_list_requests": round(self.estimated_list_cost_usd, 6),
            "sqs_tracking_requests": round(self.estimated_tracking_cost_usd, 6),
            "lambda_price_per_million_requests": LAMBDA_PRICE_PER_MILLION_REQUESTS_USD,
            "s3_list_price_per_thousand_requests": S3_LIST_PRICE_PER_THOUSAND_USD,
            "sqs_price_per_million_requests": SQS_PRICE_PER_MILLION_REQUESTS_USD,
        }
        return data


def inventory_facts(
    report: Report, rows: int, current: int, now: datetime | None = None
) -> dict[str, Any]:
    """What `plan` says of an inventory report it read: its date and age, its rows, what
    reading it cost, and what listing the bucket instead would have cost."""
    gets = len(report.files) + 2  # the data files, the manifest and its checksum
    lists = max(1, math.ceil(current / S3_KEYS_PER_LIST))
    return {
        "report": report.url,
        "format": report.file_format,
        "created": report.created.isoformat().replace("+00:00", "Z"),
        "age_hours": report.age_hours(now),
        "files": len(report.files),
        "rows": rows,
        "current_objects": current,
        "skipped_rows": rows - current,
        "read_usd": round(gets * S3_GET_PRICE_PER_THOUSAND_USD / 1000, 6),
        "listing_instead_requests": lists,
        "listing_instead_usd": round(lists * S3_LIST_PRICE_PER_THOUSAND_USD / 1000, 6),
    }
