"""Deploy, run and remove a hopper stack: the seed's deploy and decommission scripts.

Everything that talks to AWS takes a boto3 session; the stack's options are validated
(`stack.DeployConfig`) and its packages built before the first AWS call, so bad input fails
fast with exit code 2 and nothing created.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hopper import aws
from hopper.errors import (
    AWSError,
    DeployError,
    HopperError,
    InvalidInput,
    aws_errors,
    boto_errors,
    error_code,
    error_message,
    is_fatal_code,
    is_missing_object,
)
from hopper.package import DIRECT_UPLOAD_LIMIT, Artifact, build_artifact, worker_artifact
from hopper.stack import (
    ARTIFACTS,
    DEFAULT_SCHEDULE,
    DEFAULT_STACK,
    STATE,
    DeployConfig,
    artifact_key,
    template_text,
    validate_stack_name,
)

__all__ = [
    "ARTIFACTS",
    "DEFAULT_SCHEDULE",
    "DEFAULT_STACK",
    "DeployConfig",
    "Deployer",
    "artifact_key",
    "build_artifact",
    "template_text",
    "validate_stack_name",
]

log = logging.getLogger(__name__)

_DONE_SUFFIXES = ("_COMPLETE", "_FAILED")
_FAILED_WORDS = ("ROLLBACK", "FAILED")
Progress = Callable[[str], None]


def _outputs(stack: dict[str, Any]) -> dict[str, str]:
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def _parameters(stack: dict[str, Any]) -> dict[str, Any]:
    return {p["ParameterKey"]: p.get("ParameterValue") for p in stack.get("Parameters", [])}


def _failed(status: str) -> bool:
    return any(word in status for word in _FAILED_WORDS)


class Deployer:
    """Stack operations over one session. Makes no AWS call until a method is called."""

    def __init__(
        self,
        *,
        session: Any,
        poll_seconds: float = 2.0,
        max_wait_seconds: float = 1800.0,
        progress: Progress | None = None,
    ) -> None:
        self.session = session
        self._clients: dict[str, Any] = {}
        self.poll_seconds = poll_seconds
        self.max_wait_seconds = max_wait_seconds
        self.progress = progress or (lambda line: log.info("%s", line))

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = aws.client(self.session, service)
        return self._clients[service]

    # ----------------------------------------------------------------------------- deploy

    def deploy(self, config: DeployConfig) -> dict[str, str]:
        """Build the packages, upload them, create or update the stack, wait, and return its
        outputs."""
        data, digest = build_artifact()
        worker = self._worker_package(config)
        if config.worker is not None:
            target_arn = self._arn_from_account(config.worker_function)
        else:
            target_arn = self._function_arn(config.function)
        stack = self._describe(config.stack_name)
        tracked_external = config.tracked and config.worker is None
        worker_role = self._tracking_checked(config, stack) if tracked_external else ""
        bucket = config.artifact_bucket or config.bucket
        key = artifact_key(config.stack_name, digest)
        self._upload(bucket, key, data)
        self.progress(f"hopper package s3://{bucket}/{key} ({len(data) / 1024:.1f} KB)")
        worker_key = handler = ""
        if worker is not None:
            worker_key = artifact_key(config.stack_name, worker.digest, "worker")
            self._upload(bucket, worker_key, worker.data)
            handler = config.worker_source().handler
            self.progress(f"worker package s3://{bucket}/{worker_key} ({worker.describe()})")
        if stack is not None and stack["StackStatus"] == "ROLLBACK_COMPLETE":
            # A stack whose creation failed can only be deleted, then created again.
            self.progress(
                f"{config.stack_name} is ROLLBACK_COMPLETE after a failed create; replacing it"
            )
            self._delete_and_wait(config.stack_name)
            stack = None
        cfn = self.client("cloudformation")
        arguments = {
            "StackName": config.stack_name,
            "TemplateBody": config.template_body(),
            "Parameters": config.parameters(
                target_arn,
                bucket,
                key,
                worker_role=worker_role,
                worker_key=worker_key,
                worker_handler=handler,
            ),
            "Capabilities": ["CAPABILITY_IAM"],
        }
        # Events are read by the stack's id, and only those after the operation began.
        seen = self._newest_event(stack["StackId"]) if stack is not None else None
        with aws_errors("CreateStack/UpdateStack", f"stack {config.stack_name}"):
            try:
                if stack is None:
                    self.progress(f"creating stack {config.stack_name}")
                    ref = cfn.create_stack(
                        **arguments, Tags=[{"Key": "hopper:stack", "Value": config.stack_name}]
                    )["StackId"]
                else:
                    self.progress(f"updating stack {config.stack_name}")
                    ref = cfn.update_stack(**arguments)["StackId"]
            except boto_errors() as exc:
                if "No updates are to be performed" not in error_message(exc):
                    raise
                self.progress(f"{config.stack_name} is already up to date")
                if config.on_new_inventory:
                    # A deploy that failed after its stack was made left this undone.
                    self._notify_eventbridge(*config.inventory_or_fail())
                return self.outputs(config.stack_name)
        final = self._wait(ref, seen)
        if _failed(final):
            raise DeployError(
                f"stack {config.stack_name} ended {final}: {self._failure_reasons(ref, seen)}"
            )
        if config.on_new_inventory:
            self._notify_eventbridge(*config.inventory_or_fail())
        if config.alarm_email and stack is None:
            self.progress(
                f"alarms go to {config.alarm_email} once it confirms the subscription email "
                "AWS sent it"
            )
        return self.outputs(config.stack_name)

    def _notify_eventbridge(self, bucket: str, prefix: str) -> None:
        """Have the inventory bucket send its object events to EventBridge, keeping the rest
        of its notification configuration: the rule sees a report land only then."""
        s3 = self.client("s3")
        with aws_errors("GetBucketNotificationConfiguration", f"bucket {bucket}"):
            current = s3.get_bucket_notification_configuration(Bucket=bucket)
        current.pop("ResponseMetadata", None)
        if "EventBridgeConfiguration" in current:
            return
        current["EventBridgeConfiguration"] = {}
        with aws_errors("PutBucketNotificationConfiguration", f"bucket {bucket}"):
            s3.put_bucket_notification_configuration(
                Bucket=bucket, NotificationConfiguration=current
            )
        self.progress(
            f"turned on EventBridge notifications of s3://{bucket}: a new report under "
            f"{prefix} now starts a run (destroy leaves them on)"
        )

    def _worker_package(self, config: DeployConfig) -> Artifact | None:
        """The deployed worker's zip, built before any AWS call (pip may refuse a dependency)."""
        if config.worker is None:
            return None
        source = config.worker_source()
        if config.requirements is not None:
            self.progress(f"installing {config.requirements} for Python 3.12 on arm64")
        package = worker_artifact(
            source, None if config.requirements is None else Path(config.requirements)
        )
        if len(package.data) > DIRECT_UPLOAD_LIMIT:
            self.progress(
                f"the worker's package is over Lambda's 50 MB limit for a direct upload; "
                f"hopper deploys it through S3, where {package.describe()} is within limits"
            )
        return package

    def _tracking_checked(self, config: DeployConfig, stack: dict[str, Any] | None) -> str:
        """Before anything is created: the worker exists, and no async config that hopper did
        not create would be overwritten. Returns the worker's execution role, which Lambda
        delivers its records with (the queue policy names it)."""
        from hopper.runstate.tracking import destinations, function_and_qualifier

        control = self.client("lambda")
        function, qualifier = function_and_qualifier(config.function)
        with aws_errors("GetFunctionConfiguration", f"function {config.function}"):
            try:
                role = str(control.get_function_configuration(FunctionName=function)["Role"])
            except boto_errors() as exc:
                if error_code(exc) != "ResourceNotFoundException":
                    raise
                raise InvalidInput(
                    f"the worker {config.function} does not exist: tracking sets up its "
                    "asynchronous invocation config",
                    hint="deploy the worker first, or pass --no-track",
                ) from exc
        existing = destinations(control, config.function)
        ours = _outputs(stack).get("ResultsQueueArn") if stack is not None else None
        if existing is not None and ours is None:
            sent = existing.get("DestinationConfig") or {}
            targets = [
                f"{which} {sent[which]['Destination']}"
                for which in ("OnSuccess", "OnFailure")
                if (sent.get(which) or {}).get("Destination")
            ]
            raise InvalidInput(
                f"the worker {function} ({qualifier}) already has an asynchronous invocation "
                f"config{' sending ' + ' and '.join(targets) if targets else ''}, which hopper "
                "did not create and will not overwrite",
                hint=(
                    "remove it (aws lambda delete-function-event-invoke-config --function-name "
                    f"{function} --qualifier {qualifier}), or deploy with --no-track"
                ),
            )
        return role

    def _function_arn(self, function: str) -> str:
        """The worker's ARN, for a policy that names exactly it.

        A worker that does not exist yet (or cannot be read) is not an error: hopper may be
        deployed before its worker. The ARN is then built from the account and region, and a
        warning says so.
        """
        if function.startswith("arn:"):
            return function
        name, _, qualifier = function.partition(":")
        with aws_errors("GetFunctionConfiguration", f"function {function}"):
            try:
                config = self.client("lambda").get_function_configuration(FunctionName=function)
                arn = str(config["FunctionArn"])
            except boto_errors() as exc:
                if not is_fatal_code(error_code(exc)):
                    raise
                arn = self._arn_from_account(name)
                self.progress(
                    f"warning: worker {function} not found ({error_code(exc)}); "
                    f"the policy names {arn}{':' + qualifier if qualifier else ''}"
                )
        if qualifier and not arn.endswith(f":{qualifier}"):
            arn = f"{arn}:{qualifier}"
        return arn

    def _arn_from_account(self, name: str) -> str:
        sts = self.client("sts")
        with aws_errors("GetCallerIdentity", "the caller"):
            identity = sts.get_caller_identity()
        caller = str(identity["Arn"])  # arn:PARTITION:iam::ACCOUNT:...
        partition = caller.split(":")[1] if caller.startswith("arn:") else "aws"
        region = self.client("lambda").meta.region_name
        return f"arn:{partition}:lambda:{region}:{identity['Account']}:function:{name}"

    def _upload(self, bucket: str, key: str, data: bytes) -> None:
        s3 = self.client("s3")
        with aws_errors("HeadObject", f"s3://{bucket}/{key}"):
            try:
                s3.head_object(Bucket=bucket, Key=key)
                return  # Same hash, same bytes: already there.
            except boto_errors() as exc:
                if not is_missing_object(exc):
                    raise
        with aws_errors("PutObject", f"s3://{bucket}/{key}"):
            s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType="application/zip")

    def _describe(self, name: str) -> dict[str, Any] | None:
        with aws_errors("DescribeStacks", f"stack {name}"):
            try:
                stacks = self.client("cloudformation").describe_stacks(StackName=name)["Stacks"]
            except boto_errors() as exc:
                if "does not exist" in error_message(exc):
                    return None
                raise
        if not stacks or stacks[0]["StackStatus"] == "DELETE_COMPLETE":
            return None
        return dict(stacks[0])

    def _newest_event(self, name: str) -> str | None:
        """The id of the stack's newest event: what an operation started after has seen."""
        try:
            page = self.client("cloudformation").describe_stack_events(StackName=name)
        except boto_errors():
            return None
        events = page.get("StackEvents", [])
        return str(events[0]["EventId"]) if events else None

    def _events(self, name: str, after: str | None) -> list[dict[str, Any]]:
        """The stack's events newer than the event `after`, oldest first."""
        newer: list[dict[str, Any]] = []
        try:
            pages = self.client("cloudformation").get_paginator("describe_stack_events")
            # Newest first: stop at the event the operation started after.
            for page in pages.paginate(StackName=name):
                for event in page["StackEvents"]:
                    if event["EventId"] == after:
                        return newer[::-1]
                    newer.append(event)
        except boto_errors():
            return []
        return newer[::-1]

    def _wait(self, ref: str, after: str | None) -> str:
        """Stream the stack's events until it settles; return the final status. `ref` is the
        stack's id, by which a deleted stack's events stay readable."""
        seen: set[str] = set()
        deadline = time.monotonic() + self.max_wait_seconds
        # Short waits first: an emulator settles in well under a second, AWS in minutes.
        pause = min(0.25, self.poll_seconds)
        while True:
            for event in self._events(ref, after):
                if event["EventId"] in seen:
                    continue
                seen.add(event["EventId"])
                reason = event.get("ResourceStatusReason")
                self.progress(
                    f"{event['LogicalResourceId']:<26} {event['ResourceStatus']}"
                    + (f" — {reason}" if reason else "")
                )
            stack = self._describe(ref)
            status = "DELETE_COMPLETE" if stack is None else str(stack["StackStatus"])
            if status.endswith(_DONE_SUFFIXES):
                return status
            if time.monotonic() > deadline:
                name = stack["StackName"] if stack is not None else ref
                raise DeployError(f"stack {name} still {status} after {self.max_wait_seconds:.0f}s")
            time.sleep(pause)
            pause = min(pause * 2, self.poll_seconds)

    def _failure_reasons(self, ref: str, after: str | None) -> str:
        reasons = [
            f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason', 'no reason given')}"
            for e in self._events(ref, after)
            if e["ResourceStatus"].endswith("FAILED")
            and e.get("ResourceType") != "AWS::CloudFormation::Stack"
        ]
        return "; ".join(dict.fromkeys(reasons)) or "no resource reported a reason"

    def outputs(self, name: str) -> dict[str, str]:
        stack = self._describe(name)
        if stack is None:
            raise AWSError(
                f"stack {name} does not exist",
                operation="DescribeStacks",
                resource=f"stack {name}",
                hint="deploy it first with `hopper deploy`",
            )
        return _outputs(stack)

    # ----------------------------------------------------------------------------- status

    def status(self, name: str) -> dict[str, Any]:
        from hopper.status import stack_report

        return stack_report(name, self._describe(name), self.client, self.session)

    def log_group(self, name: str, *, worker: bool = False) -> str:
        """Where the hopper function (or its worker) writes its logs."""
        stack = self._describe(name)
        if stack is None:
            self.outputs(name)  # raises: not deployed
        assert stack is not None
        outputs = _outputs(stack)
        if worker and outputs.get("WorkerLogGroup"):
            return outputs["WorkerLogGroup"]
        function = (
            str(_parameters(stack).get("TargetFunctionArn"))
            if worker
            else outputs.get("FunctionName", name)
        )
        with aws_errors("GetFunctionConfiguration", f"function {function}"):
            config = self.client("lambda").get_function_configuration(FunctionName=function)
        group = (config.get("LoggingConfig") or {}).get("LogGroup")
        return str(group or f"/aws/lambda/{config['FunctionName']}")

    # ----------------------------------------------------------------------------- invoke

    def invoke(self, name: str, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run the deployed hopper now and return its summary."""
        function = self.outputs(name).get("FunctionName", name)
        control = self.client("lambda")
        with aws_errors("GetFunctionConfiguration", f"function {function}"):
            timeout = int(
                control.get_function_configuration(FunctionName=function).get("Timeout", 300)
            )
        # Wait as long as the function may run, and never send it twice (boto3 #883).
        client = aws.client(self.session, "lambda", max_attempts=1, read_timeout=timeout + 30)
        with aws_errors("Invoke", f"function {function}"):
            response = client.invoke(
                FunctionName=function,
                InvocationType="RequestResponse",
                Payload=json.dumps(event or {}).encode("utf-8"),
            )
            raw = response["Payload"].read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"raw": raw.decode("utf-8", "replace")}
        if response.get("FunctionError"):
            message = body.get("errorMessage", body) if isinstance(body, dict) else body
            raise HopperError(f"the hopper function {function} failed: {message}")
        if not isinstance(body, dict):
            raise HopperError(f"the hopper function {function} returned {body!r}, not a summary")
        return body

    # ---------------------------------------------------------------------------- destroy

    def destroy(
        self, name: str, artifact_bucket: str | None = None, *, purge_state: bool = False
    ) -> Destroyed:
        """Delete the stack and its artifacts (and with `purge_state` the runs' state); succeed
        when nothing is left. Says what went, and what stays."""
        done = Destroyed()
        stack = self._describe(name)
        buckets = {artifact_bucket} if artifact_bucket else set()
        state_bucket = None
        if stack is not None:
            parameters = _parameters(stack)
            if parameters.get("ArtifactBucket"):
                buckets.add(str(parameters["ArtifactBucket"]))
            state_bucket = parameters.get("SourceBucket")
            if parameters.get("OnNewInventory") == "true":
                done.kept.append(
                    f"EventBridge notifications of s3://{parameters.get('InventoryBucket')}, "
                    "which deploy turned on (other rules may use them)"
                )
            target = str(parameters.get("TargetFunctionArn") or "")
            if not parameters.get("WorkerArtifactKey") and target:
                done.kept.append(f"the worker {target}, which this stack did not deploy")
            self.progress(f"deleting stack {name}")
            self._delete_and_wait(name)
            done.removed.append(f"stack {name}")
        else:
            self.progress(f"stack {name} does not exist")
        for bucket in sorted(buckets):
            done.removed.extend(self._delete_keys(bucket, f"{ARTIFACTS}{name}/"))
        if state_bucket:
            state = f"s3://{state_bucket}/{STATE}/"
            if purge_state:
                purged = self._delete_keys(str(state_bucket), f"{STATE}/")
                if purged:
                    done.removed.append(f"{state} ({len(purged)} objects of run state)")
            else:
                done.kept.append(
                    f"{state}: the runs' ledgers and incremental state "
                    "(`hopper destroy --purge-state` deletes them)"
                )
        return done

    def _delete_and_wait(self, name: str) -> None:
        stack = self._describe(name)
        if stack is None:
            return
        ref = str(stack["StackId"])
        seen = self._newest_event(ref)
        with aws_errors("DeleteStack", f"stack {name}"):
            self.client("cloudformation").delete_stack(StackName=ref)
        final = self._wait(ref, seen)
        if final != "DELETE_COMPLETE":
            raise DeployError(f"stack {name} ended {final}: {self._failure_reasons(ref, seen)}")

    def _keys(self, bucket: str, prefix: str) -> Iterator[str]:
        pages = self.client("s3").get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=bucket, Prefix=prefix):
            for entry in page.get("Contents", []):
                yield str(entry["Key"])

    def _delete_keys(self, bucket: str, prefix: str) -> list[str]:
        """Delete every object under `prefix`, a thousand a call; returns their URLs."""
        s3 = self.client("s3")
        removed: list[str] = []
        with aws_errors("DeleteObjects", f"s3://{bucket}/{prefix}"):
            try:
                keys = list(self._keys(bucket, prefix))
                for start in range(0, len(keys), 1000):
                    chunk = keys[start : start + 1000]
                    answer = s3.delete_objects(
                        Bucket=bucket,
                        Delete={"Objects": [{"Key": key} for key in chunk], "Quiet": True},
                    )
                    errors = answer.get("Errors", [])
                    if errors:
                        first = errors[0]
                        raise DeployError(
                            f"could not delete s3://{bucket}/{first.get('Key')}: "
                            f"{first.get('Code')} {first.get('Message')}"
                        )
                    removed.extend(f"s3://{bucket}/{key}" for key in chunk)
            except boto_errors() as exc:
                if error_code(exc) != "NoSuchBucket":
                    raise
        return removed


@dataclass
class Destroyed:
    """What destroy removed, and what it left where it was."""

    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
