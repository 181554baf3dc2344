"""Deploy, inspect, run and remove a hopper stack: the seed's deploy and decommission scripts.

Everything that talks to AWS takes a boto3 session; nothing calls AWS before the input is
validated, so bad input fails fast with exit code 2.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
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
from hopper.lambda_target import LambdaTarget
from hopper.schedule import parse_schedule
from hopper.sources import STATE_PREFIX, S3Source, parse_source
from hopper.targets import parse_target
from hopper.threshold import parse_threshold

log = logging.getLogger(__name__)

DEFAULT_STACK = "hopper"
DEFAULT_SCHEDULE = "rate(15 minutes)"
ARTIFACTS = STATE_PREFIX + "artifacts/"
# The artifact holds the core only: the CLI (click, rich) never ships to Lambda.
_NOT_SHIPPED = frozenset({"cli.py", "__main__.py", "template.yaml"})
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_STACK_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,63}$")
_DONE = re.compile(r"_(COMPLETE|FAILED)$")
_FAILED_STACK = re.compile(r"(ROLLBACK|FAILED)")
Progress = Callable[[str], None]


def template_text() -> str:
    return resources.files("hopper").joinpath("template.yaml").read_text(encoding="utf-8")


def build_artifact(package_dir: Path | None = None) -> tuple[bytes, str]:
    """A zip of hopper's core, byte-for-byte the same for the same sources; and its sha256."""
    root = package_dir or Path(__file__).resolve().parent
    buffer = io.BytesIO()
    # Sub-packages too (wire/, runstate/), in one sorted order of their POSIX paths.
    modules = sorted(path.relative_to(root).as_posix() for path in root.rglob("*.py"))
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in modules:
            if name in _NOT_SHIPPED:
                continue
            path = root / name
            info = zipfile.ZipInfo(f"hopper/{name}", date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes(), compresslevel=9)
    data = buffer.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def artifact_key(stack: str, digest: str) -> str:
    return f"{ARTIFACTS}{stack}/hopper-{digest[:20]}.zip"


@dataclass(frozen=True)
class DeployConfig:
    source: str
    target: str
    schedule: str = DEFAULT_SCHEDULE
    schedule_enabled: bool = True
    stack_name: str = DEFAULT_STACK
    artifact_bucket: str | None = None
    mode: str = "objects"
    batch_size: int = 1
    concurrency: int = 16
    invocation_type: str = "event"
    memory: int = 256
    timeout: int = 300
    max_hops: int = 100
    incremental: bool = False
    max_failures: str | None = None
    # Track event invokes to the worker's own result (a results queue and the worker's async
    # config, owned by the stack).
    track: bool = True
    worker_retries: int = 2
    max_event_age: int = 3600

    def __post_init__(self) -> None:
        validate_stack_name(self.stack_name)
        parse_schedule(self.schedule)
        source = parse_source(self.source, mode=self.mode)
        if not isinstance(source, S3Source):
            raise InvalidInput(
                f"deploy needs an S3 source (s3://BUCKET[/PREFIX]), got {self.source!r}"
            )
        target = parse_target(self.target)
        if not isinstance(target, LambdaTarget):
            raise InvalidInput(
                f"deploy needs a Lambda target (NAME, lambda:NAME or an ARN), got {self.target!r}"
            )
        if self.artifact_bucket is not None:
            parse_source(f"s3://{self.artifact_bucket}")
        if self.max_failures is not None:
            parse_threshold(self.max_failures)
        for name, value, low, high in (
            ("--memory", self.memory, 128, 10240),
            ("--timeout", self.timeout, 30, 900),
            ("--batch-size", self.batch_size, 1, 10**6),
            ("--concurrency", self.concurrency, 1, 1000),
            ("--max-hops", self.max_hops, 0, 10**6),
            ("--worker-retries", self.worker_retries, 0, 2),
            ("--max-event-age", self.max_event_age, 60, 21600),
        ):
            if not low <= value <= high:
                raise InvalidInput(f"{name} must be between {low} and {high}, got {value}")

    @property
    def bucket(self) -> str:
        return self.source[len("s3://") :].partition("/")[0]

    @property
    def prefix(self) -> str:
        return self.source[len("s3://") :].partition("/")[2]

    @property
    def function(self) -> str:
        return self.target.removeprefix("lambda:")

    @property
    def tracked(self) -> bool:
        """Tracking applies to event invokes; a synchronous one knows its outcome at once."""
        return self.track and self.invocation_type == "event"

    def parameters(
        self, target_arn: str, artifact_bucket: str, key: str, worker_role: str = ""
    ) -> list[dict[str, str]]:
        unqualified, qualifier = _split_qualifier(target_arn)
        values = {
            "SourceBucket": self.bucket,
            "SourcePrefix": self.prefix,
            "TargetFunctionArn": target_arn,
            "ScheduleExpression": self.schedule,
            "ScheduleEnabled": "true" if self.schedule_enabled else "false",
            "Mode": self.mode,
            "BatchSize": str(self.batch_size),
            "Concurrency": str(self.concurrency),
            "InvocationType": self.invocation_type,
            "MaxHops": str(self.max_hops),
            "Incremental": "true" if self.incremental else "false",
            "MaxFailures": self.max_failures or "",
            "MemorySize": str(self.memory),
            "Timeout": str(self.timeout),
            "ArtifactBucket": artifact_bucket,
            "ArtifactKey": key,
            "Track": "true" if self.tracked else "false",
            "TargetFunctionName": unqualified,
            "TargetQualifier": qualifier,
            "WorkerRoleArn": worker_role,
            "WorkerRetries": str(self.worker_retries),
            "MaxEventAgeSeconds": str(self.max_event_age),
            # Longer than one hopper invocation, which drains the queue.
            "QueueVisibilitySeconds": str(self.timeout + 60),
        }
        return [{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()]


def _split_qualifier(arn: str) -> tuple[str, str]:
    """A function ARN without its qualifier, and the qualifier ($LATEST when none)."""
    parts = arn.split(":")
    if len(parts) == 8:
        return ":".join(parts[:7]), parts[7]
    return arn, "$LATEST"


def _outputs(stack: dict[str, Any]) -> dict[str, str]:
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def _parameters(stack: dict[str, Any]) -> dict[str, Any]:
    return {p["ParameterKey"]: p.get("ParameterValue") for p in stack.get("Parameters", [])}


def validate_stack_name(name: str) -> None:
    if not _STACK_RE.match(name):
        raise InvalidInput(
            f"stack name {name!r}: use 1-64 letters, digits and hyphens, starting with a letter "
            "(it also names the function and the rule)"
        )


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

    def _client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = aws.client(self.session, service)
        return self._clients[service]

    # ----------------------------------------------------------------------------- deploy

    def deploy(self, config: DeployConfig) -> dict[str, str]:
        """Upload the artifact, create or update the stack, wait, and return its outputs."""
        target_arn = self._function_arn(config.function)
        stack = self._describe(config.stack_name)
        worker_role = self._tracking_checked(config, stack) if config.tracked else ""
        bucket = config.artifact_bucket or config.bucket
        data, digest = build_artifact()
        key = artifact_key(config.stack_name, digest)
        self._upload(bucket, key, data)
        self.progress(f"artifact s3://{bucket}/{key} ({len(data)} bytes)")
        if stack is not None and stack["StackStatus"] == "ROLLBACK_COMPLETE":
            # A stack whose creation failed can only be deleted, then created again.
            self.progress(
                f"{config.stack_name} is ROLLBACK_COMPLETE after a failed create; replacing it"
            )
            self._delete_and_wait(config.stack_name)
            stack = None
        cfn = self._client("cloudformation")
        arguments = {
            "StackName": config.stack_name,
            "TemplateBody": template_text(),
            "Parameters": config.parameters(target_arn, bucket, key, worker_role),
            "Capabilities": ["CAPABILITY_IAM"],
        }
        since = time.time() - 5
        with aws_errors("CreateStack/UpdateStack", f"stack {config.stack_name}"):
            try:
                if stack is None:
                    self.progress(f"creating stack {config.stack_name}")
                    cfn.create_stack(
                        **arguments, Tags=[{"Key": "hopper:stack", "Value": config.stack_name}]
                    )
                else:
                    self.progress(f"updating stack {config.stack_name}")
                    cfn.update_stack(**arguments)
            except boto_errors() as exc:
                if "No updates are to be performed" not in error_message(exc):
                    raise
                self.progress(f"{config.stack_name} is already up to date")
                return self.outputs(config.stack_name)
        final = self._wait(config.stack_name, since)
        if _FAILED_STACK.search(final):
            raise DeployError(
                f"stack {config.stack_name} ended {final}: {self._failure_reasons(config.stack_name, since)}"
            )
        return self.outputs(config.stack_name)

    def _tracking_checked(self, config: DeployConfig, stack: dict[str, Any] | None) -> str:
        """Before anything is created: the worker exists, and no async config that hopper did
        not create would be overwritten. Returns the worker's execution role, which Lambda
        delivers its records with (the queue policy names it)."""
        from hopper.runstate.tracking import destinations, function_and_qualifier

        control = self._client("lambda")
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
                config = self._client("lambda").get_function_configuration(FunctionName=function)
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
        sts = self._client("sts")
        with aws_errors("GetCallerIdentity", "the caller"):
            identity = sts.get_caller_identity()
        caller = str(identity["Arn"])  # arn:PARTITION:iam::ACCOUNT:...
        partition = caller.split(":")[1] if caller.startswith("arn:") else "aws"
        region = self._client("lambda").meta.region_name
        return f"arn:{partition}:lambda:{region}:{identity['Account']}:function:{name}"

    def _upload(self, bucket: str, key: str, data: bytes) -> None:
        s3 = self._client("s3")
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
                stacks = self._client("cloudformation").describe_stacks(StackName=name)["Stacks"]
            except boto_errors() as exc:
                if "does not exist" in error_message(exc):
                    return None
                raise
        if not stacks or stacks[0]["StackStatus"] == "DELETE_COMPLETE":
            return None
        return dict(stacks[0])

    def _events(self, name: str, since: float) -> list[dict[str, Any]]:
        try:
            pages = self._client("cloudformation").get_paginator("describe_stack_events")
            events = [e for page in pages.paginate(StackName=name) for e in page["StackEvents"]]
        except boto_errors():
            return []
        recent = [e for e in events if e["Timestamp"].timestamp() >= since]
        # The API lists newest first; reversed, a stable sort keeps ties in the order they happened.
        return sorted(reversed(recent), key=lambda e: e["Timestamp"])

    def _wait(self, name: str, since: float) -> str:
        """Stream the stack's events until it settles; return the final status."""
        seen: set[str] = set()
        deadline = time.monotonic() + self.max_wait_seconds
        while True:
            for event in self._events(name, since):
                if event["EventId"] in seen:
                    continue
                seen.add(event["EventId"])
                reason = event.get("ResourceStatusReason")
                self.progress(
                    f"{event['LogicalResourceId']:<26} {event['ResourceStatus']}"
                    + (f" — {reason}" if reason else "")
                )
            stack = self._describe(name)
            status = "DELETE_COMPLETE" if stack is None else str(stack["StackStatus"])
            if _DONE.search(status) and not status.endswith("_IN_PROGRESS"):
                return status
            if time.monotonic() > deadline:
                raise DeployError(f"stack {name} still {status} after {self.max_wait_seconds:.0f}s")
            time.sleep(self.poll_seconds)

    def _failure_reasons(self, name: str, since: float) -> str:
        reasons = [
            f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason', 'no reason given')}"
            for e in self._events(name, since)
            if e["ResourceStatus"].endswith("FAILED") and e["LogicalResourceId"] != name
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
        stack = self._describe(name)
        if stack is None:
            return {"stack": name, "status": "NOT_DEPLOYED"}
        outputs = _outputs(stack)
        parameters = _parameters(stack)
        report: dict[str, Any] = {
            "stack": name,
            "status": stack["StackStatus"],
            "updated": str(stack.get("LastUpdatedTime") or stack.get("CreationTime")),
            "source": f"s3://{parameters.get('SourceBucket')}/{parameters.get('SourcePrefix') or ''}",
            "target": parameters.get("TargetFunctionArn"),
            "tracking": outputs.get("ResultsQueueUrl") or "off",
            "outputs": outputs,
        }
        rule = outputs.get("RuleArn", "").rpartition("/")[2] or name
        try:
            with aws_errors("DescribeRule", f"rule {rule}"):
                described = self._client("events").describe_rule(Name=rule)
            report["schedule"] = {
                "expression": described.get("ScheduleExpression"),
                "state": described.get("State"),
                "enabled": described.get("State") == "ENABLED",
            }
        except HopperError as exc:
            report["schedule"] = {"error": str(exc)}
        function = outputs.get("FunctionName", name)
        try:
            with aws_errors("GetFunctionConfiguration", f"function {function}"):
                config = self._client("lambda").get_function_configuration(FunctionName=function)
            report["function"] = {
                key: config.get(key)
                for key in (
                    "FunctionName",
                    "Runtime",
                    "Architectures",
                    "MemorySize",
                    "Timeout",
                    "State",
                    "LastModified",
                    "CodeSize",
                )
            }
            report["function"]["Environment"] = config.get("Environment", {}).get("Variables", {})
        except HopperError as exc:
            report["function"] = {"error": str(exc)}
        return report

    # ----------------------------------------------------------------------------- invoke

    def invoke(self, name: str, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run the deployed hopper now and return its summary."""
        function = self.outputs(name).get("FunctionName", name)
        control = self._client("lambda")
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

    def destroy(self, name: str, artifact_bucket: str | None = None) -> list[str]:
        """Delete the stack and its artifacts; succeed when nothing is left. Returns what went."""
        removed: list[str] = []
        stack = self._describe(name)
        buckets = {artifact_bucket} if artifact_bucket else set()
        if stack is not None:
            parameters = _parameters(stack)
            if parameters.get("ArtifactBucket"):
                buckets.add(str(parameters["ArtifactBucket"]))
            self.progress(f"deleting stack {name}")
            self._delete_and_wait(name)
            removed.append(f"stack {name}")
        else:
            self.progress(f"stack {name} does not exist")
        for bucket in sorted(buckets):
            removed.extend(self._delete_artifacts(bucket, name))
        return removed

    def _delete_and_wait(self, name: str) -> None:
        since = time.time() - 5
        with aws_errors("DeleteStack", f"stack {name}"):
            self._client("cloudformation").delete_stack(StackName=name)
        final = self._wait(name, since)
        if final != "DELETE_COMPLETE":
            raise DeployError(f"stack {name} ended {final}: {self._failure_reasons(name, since)}")

    def _artifact_keys(self, bucket: str, name: str) -> Iterator[str]:
        pages = self._client("s3").get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=bucket, Prefix=f"{ARTIFACTS}{name}/"):
            for entry in page.get("Contents", []):
                yield str(entry["Key"])

    def _delete_artifacts(self, bucket: str, name: str) -> list[str]:
        s3 = self._client("s3")
        removed: list[str] = []
        with aws_errors("DeleteObject", f"bucket {bucket}"):
            try:
                for key in list(self._artifact_keys(bucket, name)):
                    s3.delete_object(Bucket=bucket, Key=key)
                    removed.append(f"s3://{bucket}/{key}")
                    self.progress(f"deleted s3://{bucket}/{key}")
            except boto_errors() as exc:
                if error_code(exc) != "NoSuchBucket":
                    raise
        return removed
