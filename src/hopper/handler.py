"""The AWS Lambda entry point: `hopper.handler.handler(event, context)`.

Core only (standard library and botocore, which the Lambda runtime provides): no click, no rich.

Events it accepts:
- the seed's `{"config_bucket": B, "lambda_function": F, ...}`: source `s3://B`, target `F`,
  and the whole event is the payload each worker receives (plus `dataset_prefix`);
- the full shape: `{"source": ..., "target": ..., any run option}`;
- anything else (an EventBridge scheduled event, `{}`): the defaults from the environment
  (`HOPPER_SOURCE`, `HOPPER_TARGET`, ... as the template sets them).

A run that reaches the time budget hands its cursor to a new asynchronous invocation of this
function (a continuation), up to `HOPPER_MAX_HOPS` hops.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

from hopper import aws, runner
from hopper.config import RunConfig
from hopper.errors import HopperError, InvalidInput, LeaseHeld, aws_errors
from hopper.items import StopReason
from hopper.summary import RunStatus, RunSummary

log = logging.getLogger("hopper.handler")

# Run options that may come from the environment, and the variable for each.
ENVIRONMENT = {
    "source": "HOPPER_SOURCE",
    "target": "HOPPER_TARGET",
    "mode": "HOPPER_MODE",
    "batch_size": "HOPPER_BATCH_SIZE",
    "concurrency": "HOPPER_CONCURRENCY",
    "invocation_type": "HOPPER_INVOCATION_TYPE",
    "include": "HOPPER_INCLUDE",
    "exclude": "HOPPER_EXCLUDE",
    "payload": "HOPPER_PAYLOAD",
    "max_attempts": "HOPPER_MAX_ATTEMPTS",
    "state": "HOPPER_STATE",
    "incremental": "HOPPER_INCREMENTAL",
    "max_failures": "HOPPER_MAX_FAILURES",
    "transport": "HOPPER_TRANSPORT",
    "list_parallelism": "HOPPER_LIST_PARALLELISM",
    "results_queue": "HOPPER_RESULTS_QUEUE",
}
MAX_HOPS_ENV = "HOPPER_MAX_HOPS"
DEFAULT_MAX_HOPS = 100
MARGIN_ENV = "HOPPER_SAFETY_MARGIN"
# Seconds kept back from the Lambda time limit to drain in-flight batches and hand on.
DEFAULT_MARGIN = 20.0
SEED_FIELDS = ("config_bucket", "lambda_function")
EMF_NAMESPACE = "hopper"


def _environment_defaults(environ: Mapping[str, str]) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    for option, variable in ENVIRONMENT.items():
        value = environ.get(variable, "").strip()
        if not value:
            continue
        if option in ("include", "exclude") and value.startswith("["):
            try:
                defaults[option] = json.loads(value)
            except ValueError:
                raise InvalidInput(f"{variable} is not a JSON list: {value!r}") from None
        else:
            defaults[option] = value
    return defaults


def options_from_event(
    event: Any, environ: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split an invocation event into run options and the continuation state (if any)."""
    if not isinstance(event, dict):
        raise InvalidInput(f"the event must be a JSON object, got {type(event).__name__}")
    event = dict(event)
    continuation = event.pop("continuation", None) or {}
    if not isinstance(continuation, dict):
        raise InvalidInput("continuation must be an object")
    defaults = _environment_defaults(environ)
    if any(field in event for field in SEED_FIELDS):
        for field in SEED_FIELDS:
            if not event.get(field):
                raise InvalidInput(f"Missing {field}")
        given = {
            "source": f"s3://{event['config_bucket']}",
            "target": str(event["lambda_function"]),
            "payload": event,
            # The seed invoked each worker asynchronously, one dataset at a time.
            "invocation_type": "event",
            "batch_size": 1,
        }
    elif event.get("detail-type") == "Scheduled Event" or "source" not in event:
        # An EventBridge scheduled event carries no run options ("source" there is
        # "aws.events"): the environment says what to do.
        given = {key: value for key, value in event.items() if key in RunConfig.option_names()}
        given.pop("source", None)
    else:
        given = event
    options = {**defaults, **given}
    tracked_worker = defaults.get("target")
    if (
        options.get("target") != tracked_worker
        or options.get("invocation_type", "event") != "event"
    ):
        # The stack's results queue hears of the stack's own worker's event invokes only.
        options.pop("results_queue", None)
    if "source" not in options:
        raise InvalidInput(f"Missing source: pass it in the event or set {ENVIRONMENT['source']}")
    if "target" not in options:
        raise InvalidInput(f"Missing target: pass it in the event or set {ENVIRONMENT['target']}")
    return options, continuation


def _budget(context: Any, environ: Mapping[str, str]) -> float:
    remaining = float(context.get_remaining_time_in_millis()) / 1000.0
    margin = float(environ.get(MARGIN_ENV) or DEFAULT_MARGIN)
    # On short timeouts keep at least a quarter of the time for work.
    margin = min(margin, remaining * 0.75)
    budget = remaining - margin
    if budget <= 0:
        raise HopperError(f"no time left to run: {remaining:.1f}s remaining")
    return budget


# The metrics each invocation reports (CloudWatch Embedded Metric Format), which the stack's
# alarms watch.
METRICS = ("ItemsDispatched", "ItemsFailed", "WorkerProcessed", "WorkerFailed", "RunsFinished")


def emf_line(
    summary: RunSummary | None,
    function_name: str,
    *,
    collected: dict[str, Any] | None = None,
    finished: bool = False,
) -> str:
    """One Embedded Metric Format record of what this invocation did: the items it dispatched
    and failed to dispatch (a run's last hop counts its own, not the whole run's); the
    workers' outcomes it learnt (items of synchronous invokes, plus the destination records
    its collect stored, one per batch); and whether a run finished here."""
    counts = (summary.segment or summary.counts) if summary is not None else None
    collected = collected or {}
    values = {
        "ItemsDispatched": counts.dispatched if counts else 0,
        "ItemsFailed": counts.failed if counts else 0,
        "WorkerProcessed": (counts.processed if counts else 0) + collected.get("processed", 0),
        "WorkerFailed": (counts.worker_failed if counts else 0) + collected.get("worker_failed", 0),
        "RunsFinished": 1 if finished else 0,
    }
    return json.dumps(
        {
            "_aws": {
                "Timestamp": int(time.time() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": EMF_NAMESPACE,
                        "Dimensions": [["FunctionName"]],
                        "Metrics": [{"Name": name, "Unit": "Count"} for name in METRICS],
                    }
                ],
            },
            "FunctionName": function_name,
            "RunId": summary.run_id if summary is not None else None,
            **values,
        }
    )


def handler(event: Any, context: Any) -> dict[str, Any]:
    """Run hopper once, handing on to a continuation if the time budget runs out."""
    if not logging.getLogger().handlers:
        # Root at WARNING, so botocore's INFO lines (one per client made) stay out of the logs.
        logging.basicConfig(level=logging.WARNING)
    logging.getLogger("hopper").setLevel(logging.INFO)
    environ = os.environ
    options, continuation = options_from_event(event, environ)
    hop = int(continuation.get("hop", 0))
    max_hops = int(environ.get(MAX_HOPS_ENV) or DEFAULT_MAX_HOPS)
    if hop > max_hops:
        raise HopperError(
            f"run {continuation.get('run_id')} stopped after {max_hops} continuation hops "
            f"({MAX_HOPS_ENV}); resume it with start_after={continuation.get('cursor')!r}"
        )
    run_options = dict(options)
    if continuation.get("cursor") is not None:
        run_options["start_after"] = continuation["cursor"]
    if continuation.get("run_id"):
        run_options["run_id"] = continuation["run_id"]
    session = aws.make_session(lean=True)
    function_name = str(getattr(context, "function_name", "hopper"))
    collected = None
    if hop == 0 and options.get("results_queue") and options.get("state"):
        # Each tick first stores the outcomes the workers sent since the last one.
        collected = _collect(context, session, options)
    run_options["deadline"] = _budget(context, environ)
    config = RunConfig.from_mapping(run_options)
    log.info(
        "hop %d of run %s: %s -> %s after %r",
        hop,
        config.run_id or "(new)",
        config.source,
        config.target,
        config.start_after,
    )
    try:
        summary = runner.run(config, session=session)
    except LeaseHeld as exc:
        # Another invocation runs this job now (a tick, or a continuation): single flight.
        log.warning("skipped: %s", exc)
        print(emf_line(None, function_name, collected=collected), flush=True)
        return {"status": "skipped", "reason": str(exc), "hop": hop, "continued": False}
    result = summary.to_dict()
    result["hop"] = hop
    result["continued"] = False
    if collected is not None:
        result["collected"] = collected
    # Out of time with the listing not done: hand the cursor on, even from a hop that sent
    # nothing (it passed unchanged items; the cursor moved over them).
    handing_on = (
        not summary.listing_complete
        and summary.error is None
        and summary.stop is not None
        and summary.stop.reason is StopReason.DEADLINE
    )
    if handing_on:
        if summary.cursor is None or summary.cursor == config.start_after:
            raise HopperError(
                f"run {summary.run_id} made no progress within its time budget; "
                "raise the function timeout or lower the concurrency"
            )
        _continue(context, session, options, summary, hop + 1)
        result["continued"] = True
    finished = not result["continued"] and summary.status in (
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
    )
    print(emf_line(summary, function_name, collected=collected, finished=finished), flush=True)
    log.info(
        "hop %d done: run %s %s, dispatched %d, failed %d, not dispatched %d, continued %s",
        hop,
        summary.run_id,
        summary.status,
        summary.counts.dispatched,
        summary.counts.failed,
        summary.counts.not_dispatched,
        result["continued"],
    )
    return result


# Seconds each tick may spend draining the results queue, at most (and a quarter of its time).
COLLECT_SECONDS = 20.0


def _collect(context: Any, session: Any, options: dict[str, Any]) -> dict[str, Any]:
    from hopper.runstate.store import open_store
    from hopper.runstate.tracking import collect

    remaining = float(context.get_remaining_time_in_millis()) / 1000.0
    store = open_store(str(options["state"]), session=session)
    done = collect(
        store,
        str(options["results_queue"]),
        sqs=aws.client(session, "sqs"),
        budget=min(COLLECT_SECONDS, remaining / 4),
    )
    log.info(
        "collected %d worker outcomes (%d dropped) in %.1fs",
        done.recorded,
        done.orphaned + done.malformed,
        done.seconds,
    )
    return done.to_dict()


def _continue(
    context: Any, session: Any, options: dict[str, Any], summary: RunSummary, hop: int
) -> None:
    event = {
        **options,
        "continuation": {"cursor": summary.cursor, "run_id": summary.run_id, "hop": hop},
    }
    function = context.invoked_function_arn
    client = aws.client(session, "lambda", max_attempts=3)
    # Failing this invocation makes Lambda retry it from the same cursor.
    with aws_errors("Invoke (continuation)", f"function {function}"):
        client.invoke(
            FunctionName=function,
            InvocationType="Event",
            Payload=json.dumps(event).encode("utf-8"),
        )
    log.info("handed on to hop %d after %r", hop, summary.cursor)
