"""What a run or a plan reports: counts, the first failures and results, and the cursor."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from hopper.dispatch import DISPATCHED, FAILED, Outcome
from hopper.items import Skipped

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


@dataclass
class RunSummary:
    run_id: str
    source: str
    target: str
    mode: str
    started_at: str
    status: str = "running"
    duration_s: float = 0.0
    counts: Counts = field(default_factory=Counts)
    failures: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    listing_complete: bool = False
    cursor: str | None = None
    error: str | None = None
    stopped: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def record_skip(self, skip: Skipped) -> None:
        self.counts.skipped += 1
        if len(self.skipped) < SHOW:
            self.skipped.append({"key": skip.key, "reason": skip.reason})

    def record(self, outcome: Outcome) -> None:
        size = len(outcome.batch.items)
        counts = self.counts
        if outcome.status == DISPATCHED:
            counts.dispatched += size
            counts.dispatched_batches += 1
            if outcome.result is not None and len(self.results) < SHOW:
                self.results.append(
                    {
                        "batch": outcome.batch.index,
                        "keys": _shown(outcome),
                        "result": outcome.result,
                    }
                )
            return
        if outcome.status == FAILED:
            counts.failed += size
            counts.failed_batches += 1
        if len(self.failures) < SHOW:
            self.failures.append(
                {
                    "batch": outcome.batch.index,
                    "status": outcome.status,
                    "keys": _shown(outcome),
                    "items": size,
                    "attempts": outcome.attempts,
                    "error_type": outcome.error_type,
                    "error": outcome.error,
                    "request_id": outcome.request_id,
                }
            )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(data.pop("counts"))
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
    listing_complete: bool = True
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
        return requests * S3_LIST_PRICE_PER_THOUSAND_USD / 1000

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean_batch_items"] = self.mean_batch_items
        data["invocations"] = self.invocations
        data["estimated_cost_usd"] = {
            "lambda_requests": round(self.estimated_lambda_cost_usd, 6),
            "s3_list_requests": round(self.estimated_list_cost_usd, 6),
            "lambda_price_per_million_requests": LAMBDA_PRICE_PER_MILLION_REQUESTS_USD,
            "s3_list_price_per_thousand_requests": S3_LIST_PRICE_PER_THOUSAND_USD,
        }
        return data
