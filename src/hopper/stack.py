"""What a hopper stack is: its options (DeployConfig), validated before any AWS call, and the
CloudFormation parameters and template body they make. `deploy.py` does the AWS work.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from hopper import aws
from hopper.errors import InvalidInput
from hopper.inventory import parse_inventory_url
from hopper.lambda_target import LambdaTarget
from hopper.package import WorkerSource, parse_worker
from hopper.schedule import At, Rate, next_fire_times, parse_schedule, parse_timezone
from hopper.sources import STATE_PREFIX, parse_source
from hopper.targets import parse_target
from hopper.threshold import parse_threshold

DEFAULT_STACK = "hopper"
DEFAULT_SCHEDULE = "rate(15 minutes)"
ARTIFACTS = STATE_PREFIX + "artifacts/"
STATE = STATE_PREFIX + "state"
WORKER_SUFFIX = "-worker"
_STACK_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,63}$")
_ENV_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_TOPIC = re.compile(r"^arn:aws[a-zA-Z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}$")
_POLICY_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:iam::(\d{12}|aws):policy/[\w+=,.@/-]+$")
# Set by the Lambda runtime; a function may not set them (Lambda "Defined runtime
# environment variables").
_RESERVED_ENV = frozenset(
    {
        "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION",
        "AWS_EXECUTION_ENV", "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION", "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME", "AWS_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
        "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR",
    }
)  # fmt: skip
# Lambda's limit on all of a function's variables together.
_ENV_BYTES = 4096
# CreateStack's TemplateBody limit.
TEMPLATE_BYTES = 51_200
# One CloudWatch alarm evaluates at most 7 days; two periods of a schedule must fit.
_LONGEST_WATCH = 7 * 86400
_SHORTEST_WATCH = 300
_ENV_MARKER = '{"HOPPER_WORKER_OF": !Ref AWS::StackName}'
_POLICY_MARKER = "        # hopper deploy --worker-policy FILE.json adds its document here."


def template_text() -> str:
    return resources.files("hopper").joinpath("template.yaml").read_text(encoding="utf-8")


def artifact_key(stack: str, digest: str, kind: str = "hopper") -> str:
    return f"{ARTIFACTS}{stack}/{kind}-{digest[:20]}.zip"


def validate_stack_name(name: str) -> None:
    if not _STACK_RE.match(name):
        raise InvalidInput(
            f"stack name {name!r}: use 1-64 letters, digits and hyphens, starting with a letter "
            "(it also names the function and the schedule)"
        )


@dataclass(frozen=True)
class DeployConfig:
    source: str
    # The worker: an existing function (`target`), or a file this stack deploys (`worker`).
    target: str | None = None
    worker: str | None = None
    schedule: str = DEFAULT_SCHEDULE
    timezone: str = "UTC"
    schedule_enabled: bool = True
    flexible_window: int = 0
    schedule_retries: int = 3
    schedule_max_age: int = 3600
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
    # The deployed worker (with `worker` only).
    requirements: str | None = None
    worker_memory: int = 512
    worker_timeout: int = 300
    worker_env: Mapping[str, str] = field(default_factory=dict)
    worker_reserved_concurrency: int | None = None
    worker_policy: Mapping[str, Any] | None = None
    worker_managed_policies: tuple[str, ...] = ()
    alarm_email: str | None = None
    alarm_topic: str | None = None
    # Start a run when a new inventory report lands, instead of on a schedule.
    on_new_inventory: bool = False

    def __post_init__(self) -> None:
        validate_stack_name(self.stack_name)
        object.__setattr__(self, "source", self.source.strip())
        if not self.source.startswith(("s3://", "inventory:")):
            raise InvalidInput(
                "deploy needs an S3 source (s3://BUCKET[/PREFIX] or inventory:s3://…), "
                f"got {self.source!r}",
                hint="a deployed hopper lists S3; run a local folder with `hopper run`",
            )
        parse_source(self.source, mode=self.mode)
        if self.inventory is not None:
            # The source bucket, from where S3 writes reports: it holds the state.
            aws.split_s3_url(f"s3://{self.bucket}", what="the source bucket of the inventory")
        elif self.on_new_inventory:
            raise InvalidInput("--on-new-inventory goes with an inventory:s3://… source")
        self._check_worker()
        self._check_schedule()
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
            ("--worker-memory", self.worker_memory, 128, 10240),
            ("--worker-timeout", self.worker_timeout, 1, 900),
            ("--flexible-window", self.flexible_window, 0, 1440),
            ("--schedule-retries", self.schedule_retries, 0, 185),
            ("--schedule-max-age", self.schedule_max_age, 60, 86400),
        ):
            if not low <= value <= high:
                raise InvalidInput(f"{name} must be between {low} and {high}, got {value}")
        if self.alarm_email is not None and self.alarm_topic is not None:
            raise InvalidInput("give --alarm-email or --alarm-topic, not both")
        if self.alarm_email is not None and not _EMAIL.match(self.alarm_email):
            raise InvalidInput(f"--alarm-email {self.alarm_email!r} is not an email address")
        if self.alarm_topic is not None and not _TOPIC.match(self.alarm_topic):
            raise InvalidInput(f"--alarm-topic {self.alarm_topic!r} is not an SNS topic ARN")

    def _check_worker(self) -> None:
        if (self.target is None) == (self.worker is None):
            raise InvalidInput(
                "deploy needs the worker: --target FUNCTION (an existing Lambda function) "
                "or --worker FILE.py:FUNCTION (deployed with the stack), one of them"
            )
        if self.target is not None:
            given = [
                option
                for option, value, default in (
                    ("--requirements", self.requirements, None),
                    ("--worker-memory", self.worker_memory, 512),
                    ("--worker-timeout", self.worker_timeout, 300),
                    ("--worker-env", dict(self.worker_env) or None, None),
                    ("--worker-reserved-concurrency", self.worker_reserved_concurrency, None),
                    ("--worker-policy", self.worker_policy, None),
                    ("--worker-managed-policy", self.worker_managed_policies or None, None),
                )
                if value != default
            ]
            if given:
                raise InvalidInput(
                    f"{given[0]} goes with --worker: hopper leaves a --target function as it is"
                )
            if not isinstance(parse_target(self.target), LambdaTarget):
                raise InvalidInput(
                    f"--target {self.target!r} is a local worker: deploy it with --worker "
                    f"{self.target}, or name a Lambda function (NAME, lambda:NAME or an ARN)"
                )
            return
        if len(self.stack_name) + len(WORKER_SUFFIX) > 64:
            raise InvalidInput(
                f"stack name {self.stack_name!r}: with --worker it may have at most "
                f"{64 - len(WORKER_SUFFIX)} characters (the worker is {self.worker_function!r})"
            )
        self.worker_source()
        self._check_environment()
        if self.worker_reserved_concurrency is not None and self.worker_reserved_concurrency < 0:
            raise InvalidInput("--worker-reserved-concurrency must be 0 or more")
        for arn in self.worker_managed_policies:
            if not _POLICY_ARN.match(arn):
                raise InvalidInput(f"--worker-managed-policy {arn!r} is not an IAM policy ARN")
        if self.worker_policy is not None:
            _check_policy(self.worker_policy)
            if len(self.template_body().encode()) > TEMPLATE_BYTES:
                raise InvalidInput(
                    "--worker-policy makes the template larger than CloudFormation's "
                    f"{TEMPLATE_BYTES} bytes",
                    hint="put it in a managed policy and pass --worker-managed-policy ARN",
                )

    def _check_environment(self) -> None:
        size = 0
        for key, value in self.worker_env.items():
            if not _ENV_KEY.match(key):
                raise InvalidInput(
                    f"--worker-env {key}: a name is letters, digits and _, starting with a letter"
                )
            if key in _RESERVED_ENV or key == "HOPPER_WORKER_OF":
                raise InvalidInput(f"--worker-env {key}: Lambda (or hopper) sets {key} itself")
            size += len(key.encode()) + len(str(value).encode())
        if size > _ENV_BYTES - 64:
            raise InvalidInput(
                f"--worker-env: {size} bytes of variables; Lambda allows 4 KB in all"
            )

    def _check_schedule(self) -> None:
        schedule = parse_schedule(self.schedule)
        zone = parse_timezone(self.timezone)
        # As Scheduler takes it: the zone's own name, without stray spaces.
        object.__setattr__(self, "timezone", str(zone))
        if isinstance(schedule, At) and not next_fire_times(schedule, datetime.now(UTC), 1, zone):
            raise InvalidInput(
                f"schedule {self.schedule!r} is in the past in {self.timezone}: it would never fire"
            )

    # ------------------------------------------------------------------------ derived

    @property
    def inventory(self) -> tuple[str, str] | None:
        """For an inventory source: the bucket S3 writes the reports to, and the folder of the
        inventory configuration there (PREFIX/SOURCE_BUCKET/CONFIG_ID/), which holds every
        report and its data files."""
        if not self.source.startswith("inventory:"):
            return None
        bucket, key, _ = parse_inventory_url(self.source)
        parts = key.rstrip("/").split("/")
        if key.endswith("manifest.json"):
            parts = parts[:-2]  # DATE/manifest.json
        if len(parts) < 2:
            raise InvalidInput(
                f"source {self.source!r}: S3 writes reports to "
                "DEST_BUCKET/PREFIX/SOURCE_BUCKET/CONFIG_ID/, and this names no source bucket"
            )
        return bucket, "/".join(parts) + "/"

    def inventory_or_fail(self) -> tuple[str, str]:
        if self.inventory is None:
            raise InvalidInput("--on-new-inventory goes with an inventory:s3://… source")
        return self.inventory

    @property
    def bucket(self) -> str:
        """The bucket the datasets are in (for an inventory source, the one it lists)."""
        if self.inventory is not None:
            return self.inventory[1].rstrip("/").split("/")[-2]
        return self.source[len("s3://") :].partition("/")[0]

    @property
    def prefix(self) -> str:
        if self.inventory is not None:
            return parse_inventory_url(self.source)[2]
        return self.source[len("s3://") :].partition("/")[2]

    @property
    def worker_function(self) -> str:
        return f"{self.stack_name}{WORKER_SUFFIX}"

    @property
    def function(self) -> str:
        """The worker function's name (or ARN, as given)."""
        if self.target is None:
            return self.worker_function
        return self.target.removeprefix("lambda:")

    @property
    def tracked(self) -> bool:
        """Tracking applies to event invokes; a synchronous one knows its outcome at once."""
        return self.track and self.invocation_type == "event"

    def worker_source(self) -> WorkerSource:
        if self.worker is None:
            raise InvalidInput("no --worker given")
        return parse_worker(self.worker)

    def run_watch_seconds(self) -> int:
        """The period of the "no finished run" alarm: two of the schedule's longest gaps (and
        its flexible window), at least five minutes; 0 for no such alarm (a one-time or
        disabled schedule, or one that fires less often than every 3.5 days, which one alarm
        cannot watch)."""
        if not self.schedule_enabled or self.on_new_inventory:
            return 0
        schedule = parse_schedule(self.schedule)
        if isinstance(schedule, At):
            return 0
        if isinstance(schedule, Rate):
            gap = float(schedule.seconds)
        else:
            times = next_fire_times(schedule, datetime.now(UTC), 400, parse_timezone(self.timezone))
            if len(times) < 2:
                return 0
            gap = max((b - a).total_seconds() for a, b in itertools.pairwise(times))
        seconds = 2 * gap + 60 * self.flexible_window
        if seconds > _LONGEST_WATCH:
            return 0
        return int(max(_SHORTEST_WATCH, -(-seconds // 60) * 60))

    def parameters(
        self,
        target_arn: str,
        artifact_bucket: str,
        key: str,
        *,
        worker_role: str = "",
        worker_key: str = "",
        worker_handler: str = "",
    ) -> list[dict[str, str]]:
        unqualified, qualifier = split_qualifier(target_arn)
        inventory_bucket, inventory_prefix = self.inventory or ("", "")
        values = {
            "SourceBucket": self.bucket,
            "SourcePrefix": self.prefix,
            "SourceUrl": self.source,
            "InventoryBucket": inventory_bucket,
            "InventoryPrefix": inventory_prefix,
            "OnNewInventory": "true" if self.on_new_inventory else "false",
            # The report's external sort spills 70-100 bytes a row to /tmp: 10 GB holds
            # about 100M rows (billed only past 512 MB, and only while it runs).
            "EphemeralStorageMB": "10240" if self.inventory is not None else "512",
            "TargetFunctionArn": target_arn,
            "ScheduleExpression": self.schedule,
            "ScheduleTimezone": self.timezone,
            "ScheduleEnabled": "true" if self.schedule_enabled else "false",
            "FlexibleWindowMinutes": str(self.flexible_window),
            "ScheduleRetries": str(self.schedule_retries),
            "ScheduleMaxEventAgeSeconds": str(self.schedule_max_age),
            "RunWatchSeconds": str(self.run_watch_seconds()),
            "AlarmEmail": self.alarm_email or "",
            "AlarmTopicArn": self.alarm_topic or "",
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
            "WorkerArtifactKey": worker_key,
            "WorkerHandler": worker_handler or "worker.handler",
            "WorkerMemorySize": str(self.worker_memory),
            "WorkerTimeout": str(self.worker_timeout),
            "WorkerReservedConcurrency": str(
                -1 if self.worker_reserved_concurrency is None else self.worker_reserved_concurrency
            ),
            "WorkerManagedPolicyArns": ",".join(self.worker_managed_policies),
        }
        return [{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()]

    def template_body(self) -> str:
        """The template, with the deployed worker's variables and added policy written in:
        CloudFormation cannot build a mapping's keys or a policy from a parameter."""
        return render_template(dict(self.worker_env), self.worker_policy)


def render_template(environment: Mapping[str, str], policy: Mapping[str, Any] | None) -> str:
    text = template_text()
    if text.count(_ENV_MARKER) != 1 or text.count(_POLICY_MARKER + "\n") != 1:
        raise AssertionError("template.yaml lost a marker that deploy writes into")
    if environment:
        # JSON is YAML's flow style, so each pair can be written as JSON.
        pairs = ", ".join(f"{json.dumps(k)}: {json.dumps(str(v))}" for k, v in environment.items())
        text = text.replace(_ENV_MARKER, _ENV_MARKER[:-1] + ", " + pairs + "}")
    if policy is not None:
        item = {"PolicyName": "worker-policy", "PolicyDocument": dict(policy)}
        text = text.replace(_POLICY_MARKER, "        - " + json.dumps(item, sort_keys=True))
    return text


def _check_policy(policy: Mapping[str, Any]) -> None:
    statements = policy.get("Statement") if isinstance(policy, Mapping) else None
    if isinstance(statements, Mapping):
        statements = [statements]
    if not isinstance(statements, list) or not statements:
        raise InvalidInput("--worker-policy: a policy document has a Statement list")
    for statement in statements:
        if not isinstance(statement, Mapping) or not {"Effect", "Action", "Resource"} <= set(
            statement
        ):
            raise InvalidInput("--worker-policy: each statement needs Effect, Action and Resource")


def split_qualifier(arn: str) -> tuple[str, str]:
    """A function ARN without its qualifier, and the qualifier ($LATEST when none)."""
    parts = arn.split(":")
    if len(parts) == 8:
        return ":".join(parts[:7]), parts[7]
    return arn, "$LATEST"
