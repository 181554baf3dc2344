"""A function's CloudWatch Logs, one readable line per record: `hopper logs`.

Lambda writes hopper's records as JSON (the template's LoggingConfig), its own platform records
as JSON too, and what a function prints as it is; the EMF metrics line is JSON with an `_aws`
block. Each becomes `TIME LEVEL message [request]`, so that a run reads like a terminal log.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from hopper.errors import AWSError, InvalidInput, aws_errors, boto_errors, error_code

_SINCE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# How often --follow asks for new records.
FOLLOW_SECONDS = 2.0


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`90s`, `10m`, `1h`, `2d` ago, or an ISO 8601 time (UTC unless it says otherwise)."""
    now = now or datetime.now(UTC)
    value = text.strip()
    match = _SINCE.match(value)
    if match:
        return now - timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"--since {text!r}: use an age such as 10m, 1h or 2d, or a time such as "
            "2026-11-30T09:00:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def format_event(event: dict[str, Any]) -> str:
    """One log event as one line."""
    stamp = datetime.fromtimestamp(int(event.get("timestamp", 0)) / 1000, UTC)
    when = stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"
    message = str(event.get("message", "")).rstrip("\n")
    try:
        record = json.loads(message) if message.startswith("{") else None
    except ValueError:
        record = None
    if not isinstance(record, dict):
        return f"{when} {_one_line(message)}"
    return f"{when} {_record_line(record)}"


def _record_line(record: dict[str, Any]) -> str:
    request = record.get("requestId") or (record.get("record") or {}).get("requestId")
    tail = f"  [{str(request)[:8]}]" if request else ""
    if "_aws" in record:
        metrics = [
            m["Name"] for d in record["_aws"].get("CloudWatchMetrics", []) for m in d["Metrics"]
        ]
        values = " ".join(f"{name}={record.get(name)}" for name in metrics)
        run = f"run {record['RunId']}: " if record.get("RunId") else ""
        return f"METRICS {run}{values}"
    if "type" in record and "record" in record:  # a platform record: start, report, ...
        return _platform_line(record) + tail
    level = str(record.get("level", "INFO"))
    text = record.get("message")
    if text is None and record.get("errorType"):
        text = f"{record['errorType']}: {record.get('errorMessage', '')}"
    logger = record.get("logger")
    body = text if isinstance(text, str) else json.dumps(text if text is not None else record)
    return f"{level:<7} {logger + ': ' if logger else ''}{_one_line(body)}{tail}"


def _platform_line(record: dict[str, Any]) -> str:
    kind = str(record["type"]).removeprefix("platform.")
    details = record.get("record") or {}
    if kind == "report":
        metrics = details.get("metrics") or {}
        return (
            f"REPORT  {details.get('status', 'done')}, {metrics.get('durationMs', '?')} ms, "
            f"{metrics.get('maxMemoryUsedMB', '?')}/{metrics.get('memorySizeMB', '?')} MB"
        )
    return f"{kind.upper():<7} {_one_line(json.dumps(details, sort_keys=True))}"


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", " ")


def events(
    client: Any,
    group: str,
    *,
    since: datetime,
    pattern: str | None = None,
    follow: bool = False,
    stop: threading.Event | None = None,
    poll: float = FOLLOW_SECONDS,
) -> Iterator[dict[str, Any]]:
    """The group's events from `since`, oldest first; with `follow`, then the new ones as they
    come, until `stop` is set. An event is yielded once, though later queries start at the
    last timestamp seen again (CloudWatch may add events with that same timestamp)."""
    start = int(since.timestamp() * 1000)
    seen: set[Any] = set()
    while True:
        for event in _query(client, group, start, pattern):
            key = _identity(event)
            if key in seen:
                continue
            seen.add(key)
            start = max(start, int(event["timestamp"]))
            yield event
        if not follow or (stop is not None and stop.wait(poll)):
            return
        if stop is None:
            time.sleep(poll)


def _identity(event: dict[str, Any]) -> Any:
    """CloudWatch names each event; an emulator that does not is told apart by its content."""
    if event.get("eventId"):
        return event["eventId"]
    return (event.get("timestamp"), event.get("logStreamName"), event.get("message"))


def _query(client: Any, group: str, start: int, pattern: str | None) -> Iterator[dict[str, Any]]:
    arguments: dict[str, Any] = {"logGroupName": group, "startTime": start}
    if pattern:
        arguments["filterPattern"] = pattern
    with aws_errors("FilterLogEvents", f"log group {group}"):
        try:
            pages = client.get_paginator("filter_log_events").paginate(**arguments)
            found = [event for page in pages for event in page.get("events", [])]
        except boto_errors() as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            raise AWSError(
                f"log group {group} does not exist",
                operation="FilterLogEvents",
                resource=f"log group {group}",
                hint="the function has not run yet, or its logs go to another group",
            ) from exc
    # Across streams, FilterLogEvents interleaves; a log reads in time order.
    yield from sorted(found, key=lambda e: int(e["timestamp"]))


def run_pattern(run_id: str) -> str:
    """A filter pattern for the records that name a run: the hopper's own say its id."""
    return json.dumps(run_id)
