"""Event invokes tracked to the worker's own result, through Lambda destinations.

The worker's asynchronous invocation config sends a record of every invocation, success
(`OnSuccess`) and failure after Lambda's own retries (`OnFailure`), to one SQS queue. Each
record carries the event it was about (`requestPayload`), and so the `hopper` block every
event holds: the run id and the batch's idempotency key. `collect` drains the queue into each
run's state; a message is deleted only once its record is stored there.

Records are matched by that block, never by request ids: nothing documents that the 202's
`x-amzn-RequestId` is the record's `requestContext.requestId`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hopper import aws
from hopper.errors import InvalidInput, aws_errors, boto_errors, error_code
from hopper.items import PROCESSED, WORKER_FAILED
from hopper.runstate.record import add_worker_records, kept_result, list_runs, load_run, refresh
from hopper.runstate.store import Store

log = logging.getLogger(__name__)

# Added to the last moment a record can arrive, before a pending batch counts as lost.
LOST_MARGIN = 300.0
# Lambda's documented defaults for an asynchronous invocation config.
DEFAULT_MAX_EVENT_AGE = 21600
DEFAULT_RETRIES = 2
# Records written to the state in one object, at most (ten receives' worth).
FLUSH_EVERY = 100
_CONDITIONS = {"Success": PROCESSED, "RetriesExhausted": WORKER_FAILED}


@dataclass(frozen=True)
class Tracking:
    """Where a run's records arrive, and when a batch without one is lost."""

    queue_url: str
    queue_arn: str
    lost_after: float

    def document(self) -> dict[str, Any]:
        return {"queue": self.queue_url, "queue_arn": self.queue_arn, "lost_after": self.lost_after}


def lost_after(max_event_age: float, retries: int, timeout: float) -> float:
    """Seconds after dispatch by which a batch's record must have come: the event may wait
    in Lambda's queue for max_event_age, then run (retries + 1) times for up to `timeout`."""
    return max_event_age + (retries + 1) * timeout + LOST_MARGIN


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class WorkerRecord:
    run_id: str
    key: str
    line: dict[str, Any]


class Unusable(ValueError):
    """A message that is not a destination record of a hopper event; says why."""

    def __init__(self, reason: str, *, orphan: bool) -> None:
        super().__init__(reason)
        self.orphan = orphan


def parse_record(body: str) -> WorkerRecord:
    """A destination record (as the Lambda docs give it) as a line for the run's state.
    Raises Unusable: `orphan` for a record of an event hopper did not send (no `hopper`
    block), not for a message that is no destination record at all."""
    try:
        data = json.loads(body)
    except ValueError:
        raise Unusable("not JSON", orphan=False) from None
    if not isinstance(data, dict) or not isinstance(data.get("requestContext"), dict):
        raise Unusable("not a Lambda destination record", orphan=False)
    context = data["requestContext"]
    condition = str(context.get("condition", ""))
    payload = data.get("requestPayload")
    block = payload.get("hopper") if isinstance(payload, dict) else None
    if not isinstance(block, dict) or not block.get("run_id") or not block.get("idempotency_key"):
        raise Unusable("the event it is about carries no hopper block", orphan=True)
    worker = _CONDITIONS.get(condition, WORKER_FAILED)
    response = data.get("responsePayload")
    line: dict[str, Any] = {
        "key": str(block["idempotency_key"]),
        "batch": block.get("batch"),
        "attempt": block.get("attempt"),
        "condition": condition,
        "worker": worker,
        "request_id": context.get("requestId"),
        "invocations": context.get("approximateInvokeCount"),
        "timestamp": data.get("timestamp"),
        "collected_at": round(time.time(), 3),
    }
    if worker is PROCESSED:
        if response is not None:
            line.update(kept_result(response))
    elif condition == "EventAgeExceeded":
        line["error_type"] = "EventAgeExceeded"
        line["error"] = "the event expired in Lambda's queue before the worker ran it"
    else:
        error = response if isinstance(response, dict) else {}
        function_error = (data.get("responseContext") or {}).get("functionError")
        line["error_type"] = str(error.get("errorType") or function_error or condition)
        line["error"] = str(error.get("errorMessage") or response or "")[:2000]
    return WorkerRecord(str(block["run_id"]), line["key"], line)


# ----------------------------------------------------------------------------- collect


@dataclass
class Collected:
    """What one collect did."""

    received: int = 0
    recorded: int = 0
    # Of the records stored, how many say the worker succeeded, and how many that it failed
    # (a record Lambda delivered twice counts twice here, once in the run).
    processed: int = 0
    worker_failed: int = 0
    orphaned: int = 0
    malformed: int = 0
    seconds: float = 0.0
    runs: set[str] = field(default_factory=set)

    def to_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "recorded": self.recorded,
            "processed": self.processed,
            "worker_failed": self.worker_failed,
            "orphaned": self.orphaned,
            "malformed": self.malformed,
            "runs": sorted(self.runs),
            "seconds": round(self.seconds, 3),
        }


def collect(
    store: Store,
    queue_url: str,
    *,
    sqs: Any,
    budget: float = 20.0,
    clock: Callable[[], float] = time.monotonic,
) -> Collected:
    """Drain `queue_url` into the runs of `store` for up to `budget` seconds, or until it is
    empty. Records of runs this state does not know, and messages that are no destination
    record, are counted, logged and deleted; the rest are deleted once stored."""
    began = clock()
    done = Collected()
    known: dict[str, bool] = {}
    held: list[tuple[str, WorkerRecord | None]] = []

    def flush() -> None:
        by_run: dict[str, list[dict[str, Any]]] = {}
        for _, record in held:
            if record is not None:
                by_run.setdefault(record.run_id, []).append(record.line)
        for run_id, lines in by_run.items():
            add_worker_records(store, run_id, lines)
            done.recorded += len(lines)
            done.processed += sum(1 for line in lines if line["worker"] == PROCESSED)
            done.worker_failed += sum(1 for line in lines if line["worker"] != PROCESSED)
            done.runs.add(run_id)
        _delete(sqs, queue_url, [receipt for receipt, _ in held])
        held.clear()

    while clock() - began < budget:
        with aws_errors("ReceiveMessage", f"queue {queue_url}"):
            answer = sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                # Long enough to store and delete what this call holds, with room to spare.
                VisibilityTimeout=int(max(60, 3 * budget)),
            )
        messages = answer.get("Messages", [])
        if not messages:
            break
        for message in messages:
            done.received += 1
            held.append((message["ReceiptHandle"], _usable(message, store, known, done)))
        if len(held) >= FLUSH_EVERY:
            flush()
    if held:
        flush()
    if done.orphaned or done.malformed:
        log.warning(
            "collect %s: %d records of runs this state does not know, %d unusable messages; "
            "deleted",
            queue_url,
            done.orphaned,
            done.malformed,
        )
    for run_id in sorted(done.runs):
        refresh(store, run_id)
    done.seconds = clock() - began
    return done


def _usable(
    message: dict[str, Any], store: Store, known: dict[str, bool], done: Collected
) -> WorkerRecord | None:
    try:
        record = parse_record(str(message.get("Body", "")))
    except Unusable as why:
        if why.orphan:
            done.orphaned += 1
        else:
            done.malformed += 1
        log.info("dropping message %s: %s", message.get("MessageId"), why)
        return None
    if record.run_id not in known:
        known[record.run_id] = load_run(store, record.run_id) is not None
    if not known[record.run_id]:
        done.orphaned += 1
        log.info("dropping the record of run %s, unknown in %s", record.run_id, store.location)
        return None
    return record


def _delete(sqs: Any, queue_url: str, receipts: list[str]) -> None:
    for start in range(0, len(receipts), 10):
        entries = [
            {"Id": str(i), "ReceiptHandle": receipt}
            for i, receipt in enumerate(receipts[start : start + 10])
        ]
        with aws_errors("DeleteMessageBatch", f"queue {queue_url}"):
            answer = sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)
        for failed in answer.get("Failed", []):
            # Stored already: if it comes back, the merge counts it once.
            log.warning("could not delete a collected message: %s", failed.get("Message"))


# ------------------------------------------------------------------- setting up tracking


def queue_identity(sqs: Any, text: str) -> tuple[str, str]:
    """(URL, ARN) of a queue given by either."""
    text = text.strip()
    if text.startswith("arn:"):
        parts = text.split(":")
        if len(parts) != 6 or parts[2] != "sqs":
            raise InvalidInput(f"--results-queue {text!r} is not an SQS queue ARN")
        account, name = parts[4], parts[5]
        with aws_errors("GetQueueUrl", f"queue {text}"):
            url = sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
        return str(url), text
    if not text.startswith(("https://", "http://")):
        raise InvalidInput(f"--results-queue {text!r}: give the queue's URL or ARN")
    with aws_errors("GetQueueAttributes", f"queue {text}"):
        attributes = sqs.get_queue_attributes(QueueUrl=text, AttributeNames=["QueueArn"])
    return text, str(attributes["Attributes"]["QueueArn"])


def function_and_qualifier(target: str) -> tuple[str, str]:
    """The function (name or unqualified ARN) and the qualifier an invoke of `target` runs:
    $LATEST when none is given."""
    name = target.removeprefix("lambda:")
    if name.startswith("arn:"):
        parts = name.split(":")
        if len(parts) == 8:
            return ":".join(parts[:7]), parts[7]
        return name, "$LATEST"
    function, _, qualifier = name.partition(":")
    return function, qualifier or "$LATEST"


def destinations(lambda_client: Any, target: str) -> dict[str, Any] | None:
    """The async invocation config of the qualifier `target` invokes, or None if it has none."""
    function, qualifier = function_and_qualifier(target)
    with aws_errors("GetFunctionEventInvokeConfig", f"function {target}"):
        try:
            config = lambda_client.get_function_event_invoke_config(
                FunctionName=function, Qualifier=qualifier
            )
        except boto_errors() as exc:
            if error_code(exc) == "ResourceNotFoundException" and "EventInvokeConfig" in str(exc):
                return None
            raise
    return dict(config)


def set_up(target: str, queue: str, *, session: Any, timeout: float | None = None) -> Tracking:
    """Check that the worker's async config sends both outcomes to `queue`; the Tracking."""
    sqs = aws.client(session, "sqs")
    lambda_client = aws.client(session, "lambda")
    url, arn = queue_identity(sqs, queue)
    config = destinations(lambda_client, target) or {}
    sent = config.get("DestinationConfig") or {}
    missing = [
        which
        for which in ("OnSuccess", "OnFailure")
        if (sent.get(which) or {}).get("Destination") != arn
    ]
    if missing:
        function, qualifier = function_and_qualifier(target)
        raise InvalidInput(
            f"the worker {target} ({qualifier}) does not send {' and '.join(missing)} "
            f"records to {arn}",
            hint=(
                "set both destinations to the queue, e.g. `aws lambda "
                f"put-function-event-invoke-config --function-name {function} --qualifier "
                f"{qualifier} --destination-config 'OnSuccess={{Destination={arn}}},"
                f"OnFailure={{Destination={arn}}}'`"
            ),
        )
    if timeout is None:
        with aws_errors("GetFunctionConfiguration", f"function {target}"):
            function_config = lambda_client.get_function_configuration(
                FunctionName=function_and_qualifier(target)[0]
            )
        timeout = float(function_config.get("Timeout", 3))
    age = float(config.get("MaximumEventAgeInSeconds") or DEFAULT_MAX_EVENT_AGE)
    retries_given = config.get("MaximumRetryAttempts")
    retries = DEFAULT_RETRIES if retries_given is None else int(retries_given)
    return Tracking(url, arn, lost_after(age, retries, timeout))


def tracked_queues(store: Store) -> list[str]:
    """The results queues of the runs in `store` that still wait for records."""
    queues = {
        str(document["tracked_by"]["queue"])
        for document in list_runs(store)
        if isinstance(document.get("tracked_by"), dict) and int(document.get("pending") or 0) > 0
    }
    return sorted(queues)


def collect_state(
    store: Store,
    *,
    session_for: Callable[[], Any],
    queue: str | None = None,
    budget: float = 20.0,
) -> Collected:
    """Collect every queue the runs of `store` wait on (or `queue`), sharing `budget`.
    `session_for()` is called only when there is a queue to read: a state without tracked
    runs makes no AWS call."""
    total = Collected()
    sqs: Any = None
    queues = [queue] if queue else tracked_queues(store)
    began = time.monotonic()
    for name in queues:
        if sqs is None:
            sqs = aws.client(session_for(), "sqs")
        url, _ = queue_identity(sqs, name)
        left = budget - (time.monotonic() - began)
        if left <= 0:
            break
        done = collect(store, url, sqs=sqs, budget=left)
        total.received += done.received
        total.recorded += done.recorded
        total.processed += done.processed
        total.worker_failed += done.worker_failed
        total.orphaned += done.orphaned
        total.malformed += done.malformed
        total.runs |= done.runs
    total.seconds = time.monotonic() - began
    return total
