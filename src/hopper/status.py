"""What a deployed hopper is doing: its schedule (and when it fires next), its last run, its
queues, its alarms and its functions, as one report.

Each part is read on its own: a part that cannot be read (a resource an emulator skipped, a
right the caller lacks) says so in its place and the rest of the report still comes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from hopper.errors import HopperError, aws_errors, boto_errors, error_code
from hopper.schedule import Rate, next_fire_times, parse_schedule, parse_timezone
from hopper.stack import STATE

# How many fire times status shows.
NEXT_TIMES = 3
_FUNCTION_KEYS = (
    "FunctionName", "Runtime", "Architectures", "MemorySize", "Timeout", "State",
    "LastModified", "CodeSize",
)  # fmt: skip
_RUN_KEYS = (
    "run_id", "status", "started_at", "finished_at", "listed", "selected", "unchanged",
    "dispatched", "failed", "not_dispatched", "processed", "worker_failed", "pending", "lost",
)  # fmt: skip


def stack_report(
    name: str,
    stack: dict[str, Any] | None,
    client: Callable[[str], Any],
    session: Any,
    *,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The report on stack `name` (as DescribeStacks gave it, or None when not deployed)."""
    if stack is None:
        return {"stack": name, "status": "NOT_DEPLOYED"}
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    parameters = {p["ParameterKey"]: p.get("ParameterValue") for p in stack.get("Parameters", [])}
    bucket = parameters.get("SourceBucket")
    report: dict[str, Any] = {
        "stack": name,
        "status": stack["StackStatus"],
        "updated": _when(stack.get("LastUpdatedTime") or stack.get("CreationTime")),
        "source": parameters.get("SourceUrl")
        or f"s3://{bucket}/{parameters.get('SourcePrefix') or ''}",
        "target": parameters.get("TargetFunctionArn"),
        "state": f"s3://{bucket}/{STATE}",
        "tracking": outputs.get("ResultsQueueUrl") or "off",
        "outputs": outputs,
    }
    when = now or datetime.now(UTC)
    if outputs.get("InventoryRuleName"):
        where = f"s3://{parameters.get('InventoryBucket')}/{parameters.get('InventoryPrefix')}"
        report["schedule"] = _part(
            lambda: _inventory_rule(outputs["InventoryRuleName"], where, client)
        )
    else:
        report["schedule"] = _part(
            lambda: _schedule(outputs.get("ScheduleName", name), client, when)
        )
    asked = outputs.get("ScheduleTimezone")
    found = report["schedule"].get("timezone")
    if asked and found and asked != found:
        # The schedule is not what the stack declared (changed by hand, or an emulator that
        # drops the zone): say so rather than show the next times in a zone nobody chose.
        report["schedule"]["drift"] = f"the stack declares {asked}; the schedule has {found}"
    report["last_run"] = _part(lambda: _last_run(report["state"], session))
    queues = {
        "results": outputs.get("ResultsQueueUrl"),
        "dead_letters": outputs.get("DeadLetterQueueUrl"),
    }
    report["queues"] = {
        label: _part(functools.partial(_queue, url, client)) for label, url in queues.items() if url
    }
    report["alarms"] = _part(lambda: _alarms(outputs.get("Alarms", ""), client))
    report["function"] = _part(lambda: _function(outputs.get("FunctionName", name), client))
    if outputs.get("WorkerFunctionName"):
        # Only the names of the worker's variables: their values are the user's (--worker-env).
        report["worker"] = _part(
            lambda: _function(outputs["WorkerFunctionName"], client, values=False)
        )
    return report


def _part(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except HopperError as exc:
        return {"error": str(exc)}


def _schedule(name: str, client: Callable[[str], Any], now: datetime) -> dict[str, Any]:
    with aws_errors("GetSchedule", f"schedule {name}"):
        try:
            found = client("scheduler").get_schedule(Name=name)
        except boto_errors() as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            return {
                "missing": f"the stack lists no schedule that Scheduler knows: {name!r} "
                "does not exist, so nothing starts this hopper on a schedule"
            }
    expression = str(found.get("ScheduleExpression", ""))
    zone_name = str(found.get("ScheduleExpressionTimezone") or "UTC")
    enabled = found.get("State") == "ENABLED"
    window = found.get("FlexibleTimeWindow") or {}
    document: dict[str, Any] = {
        "expression": expression,
        "timezone": zone_name,
        "state": found.get("State"),
        "enabled": enabled,
        "flexible_window_minutes": window.get("MaximumWindowInMinutes", 0),
        "next": [],
    }
    if not enabled:
        return document
    zone = parse_timezone(zone_name)
    schedule = parse_schedule(expression)
    if isinstance(schedule, Rate):
        # A rate fires from when the schedule was (last) set, every interval.
        anchor = found.get("LastModificationDate") or found.get("CreationDate") or now
        step = timedelta(seconds=schedule.seconds)
        ahead = max(0, math.ceil((now - anchor) / step))
        times = [anchor + step * (ahead + i) for i in range(NEXT_TIMES)]
        times = [t if t > now else t + step for t in times]
    else:
        times = next_fire_times(schedule, now, NEXT_TIMES, zone)
    document["next"] = [{"local": t.astimezone(zone).isoformat(), "utc": _utc(t)} for t in times]
    return document


def _when(moment: Any) -> str | None:
    return _utc(moment) if isinstance(moment, datetime) else None


def _inventory_rule(rule: str, where: str, client: Callable[[str], Any]) -> dict[str, Any]:
    with aws_errors("DescribeRule", f"rule {rule}"):
        found = client("events").describe_rule(Name=rule)
    return {
        "trigger": f"a new inventory report in {where} starts a run",
        "rule": rule,
        "state": found.get("State"),
        "enabled": found.get("State") == "ENABLED",
    }


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _last_run(state: str, session: Any) -> dict[str, Any] | None:
    from hopper.runstate.record import latest_run
    from hopper.runstate.store import open_store

    document = latest_run(open_store(state, session=session))
    if document is None:
        return None
    return {key: document[key] for key in _RUN_KEYS if key in document}


def _queue(url: str, client: Callable[[str], Any]) -> dict[str, Any]:
    with aws_errors("GetQueueAttributes", f"queue {url}"):
        attributes = client("sqs").get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
    return {
        "url": url,
        "messages": int(attributes.get("ApproximateNumberOfMessages", 0)),
        "in_flight": int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
    }


def _alarms(names: str, client: Callable[[str], Any]) -> list[dict[str, Any]]:
    wanted = [name for name in names.split(",") if name]
    if not wanted:
        return []
    with aws_errors("DescribeAlarms", "the stack's alarms"):
        found = {
            alarm["AlarmName"]: alarm
            for alarm in client("cloudwatch").describe_alarms(AlarmNames=wanted)["MetricAlarms"]
        }
    return [
        {
            "name": name,
            "state": found[name]["StateValue"] if name in found else "MISSING",
            "reason": found[name].get("StateReason", "")
            if name in found
            else "the stack lists it, CloudWatch has no such alarm",
            "actions": found[name].get("AlarmActions", []) if name in found else [],
        }
        for name in wanted
    ]


def _function(name: str, client: Callable[[str], Any], *, values: bool = True) -> dict[str, Any]:
    with aws_errors("GetFunctionConfiguration", f"function {name}"):
        config = client("lambda").get_function_configuration(FunctionName=name)
    document = {key: config.get(key) for key in _FUNCTION_KEYS}
    variables = config.get("Environment", {}).get("Variables", {})
    document["Environment"] = variables if values else sorted(variables)
    return document
