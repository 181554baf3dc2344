"""RunConfig: every option of a run, validated in one place for the CLI, the library and Lambda."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hopper.errors import InvalidInput
from hopper.event import RESERVED_FIELDS

MODES = ("objects", "prefixes")
INVOCATION_TYPES = ("event", "request-response")

# Lambda's documented invocation payload limits: 6 MB synchronous; asynchronous was raised
# from 256 KB to 1 MB in October 2025.
ASYNC_PAYLOAD_LIMIT = 1_048_576
SYNC_PAYLOAD_LIMIT = 6_291_456

DEFAULT_LAMBDA_CONCURRENCY = 16
DEFAULT_TIMEOUT = 60.0
DEFAULT_MEMORY = 128
DEFAULT_MAX_ATTEMPTS = 6
DEFAULT_LIST_PARALLELISM = 16
TRANSPORTS = ("auto", "fast", "boto3")


@dataclass(frozen=True)
class RunConfig:
    """What to list, what to keep, how to batch, where to send it and how hard to try."""

    source: str
    target: str | None = None
    mode: str = "objects"
    start_after: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    min_size: int | None = None
    max_size: int | None = None
    modified_after: datetime | None = None
    modified_before: datetime | None = None
    limit: int | None = None
    batch_size: int = 1
    invocation_type: str = "event"
    # None: 16 for Lambda targets, the number of CPUs for local ones.
    concurrency: int | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)
    deadline: float | None = None
    # Local workers: per-invocation time limit and the memory figure their context reports.
    timeout: float = DEFAULT_TIMEOUT
    memory: int = DEFAULT_MEMORY
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    run_id: str | None = None
    region: str | None = None
    profile: str | None = None
    # Run state (ledger, lease, checkpoint): s3://BUCKET/PREFIX or a folder.
    state: str | None = None
    incremental: bool = False
    # "N" items, or "P%" of the items settled so far.
    max_failures: str | None = None
    # How S3 and Lambda are called: "fast" (hopper's lean signed HTTP), "boto3", or "auto".
    transport: str = "auto"
    # S3 pages listed at once for a large listing; 1 lists one page after another.
    list_parallelism: int = DEFAULT_LIST_PARALLELISM
    # The SQS queue (URL or ARN) the worker's async config sends both outcomes to: event
    # invokes are then tracked to the worker's own result (hopper.runstate.outcomes).
    results_queue: str | None = None
    # After dispatch, wait up to this many seconds for every tracked batch's outcome.
    wait_for_workers: float | None = None

    def __post_init__(self) -> None:
        if not self.source or not self.source.strip():
            raise InvalidInput("source is empty: give s3://BUCKET[/PREFIX] or a folder")
        if self.target is not None and not self.target.strip():
            raise InvalidInput("target is empty: give lambda:NAME, an ARN, or FILE.py:FUNC")
        if self.mode not in MODES:
            raise InvalidInput(f"unknown mode {self.mode!r}: use one of {', '.join(MODES)}")
        if self.invocation_type not in INVOCATION_TYPES:
            raise InvalidInput(
                f"unknown invocation type {self.invocation_type!r}: "
                f"use one of {', '.join(INVOCATION_TYPES)}"
            )
        if self.transport not in TRANSPORTS:
            raise InvalidInput(
                f"unknown transport {self.transport!r}: use one of {', '.join(TRANSPORTS)}"
            )
        for name in (
            "min_size", "max_size", "limit", "batch_size", "concurrency", "memory",
            "list_parallelism",
        ):  # fmt: skip
            _positive(name, getattr(self, name))
        for name in ("deadline", "timeout"):
            _positive(name, getattr(self, name))
        _positive("max_attempts", self.max_attempts)
        if (
            self.min_size is not None
            and self.max_size is not None
            and self.min_size > self.max_size
        ):
            raise InvalidInput(
                f"--min-size {self.min_size} is larger than --max-size {self.max_size}"
            )
        if (
            self.modified_after is not None
            and self.modified_before is not None
            and self.modified_after >= self.modified_before
        ):
            raise InvalidInput("--modified-after must be earlier than --modified-before")
        for moment in (self.modified_after, self.modified_before):
            if moment is not None and moment.tzinfo is None:
                raise InvalidInput("modified-after/before must carry a time zone")
        if self.mode == "prefixes":
            used = [
                flag
                for flag, value in (
                    ("--min-size", self.min_size),
                    ("--max-size", self.max_size),
                    ("--modified-after", self.modified_after),
                    ("--modified-before", self.modified_before),
                )
                if value is not None
            ]
            if used:
                raise InvalidInput(
                    f"{', '.join(used)} cannot be used with --mode prefixes: "
                    "a prefix has no size or modification time"
                )
        if not isinstance(self.payload, Mapping):
            raise InvalidInput("payload must be a JSON object")
        clash = sorted(RESERVED_FIELDS.intersection(self.payload))
        if clash:
            raise InvalidInput(f"payload may not set {', '.join(clash)}: hopper fills these fields")
        if self.incremental and not self.state:
            raise InvalidInput("--incremental needs --state: the state remembers what was sent")
        if self.results_queue is not None:
            if not self.results_queue.strip():
                raise InvalidInput("--results-queue is empty: give the queue's URL or ARN")
            if not self.state:
                raise InvalidInput(
                    "--results-queue needs --state: the workers' outcomes are kept there"
                )
            if self.is_local_target or self.invocation_type != "event":
                raise InvalidInput(
                    "--results-queue tracks event invokes of a Lambda worker; local and "
                    "request-response runs know each outcome at once"
                )
        if self.wait_for_workers is not None:
            if self.wait_for_workers < 0:
                raise InvalidInput(
                    f"--wait-for-workers must be 0 or more seconds, got {self.wait_for_workers}"
                )
            if self.results_queue is None:
                raise InvalidInput(
                    "--wait-for-workers needs --results-queue: that is where the outcomes arrive"
                )
        if self.max_failures is not None:
            from hopper.threshold import parse_threshold

            parse_threshold(self.max_failures)
        for pattern in (*self.include, *self.exclude):
            if not pattern:
                raise InvalidInput("an --include or --exclude pattern is empty")

    def anchored(self) -> RunConfig:
        """The same run with its local paths made absolute (a folder source, a worker file):
        a run recorded this way is retried from any working directory."""
        source, target = self.source, self.target
        if self.is_local_source:
            source = _absolute(source.removeprefix("file://"))
        if target is not None and self.is_local_target and not target.startswith("python:"):
            file, _, function = target.rpartition(":")
            target = f"{_absolute(file)}:{function}"
        return dataclasses.replace(self, source=source, target=target)

    @property
    def is_local_source(self) -> bool:
        """A folder (a path, or file://PATH), not S3 or an inventory report."""
        source = self.source.strip()
        if source.startswith("file://"):
            return True
        return not source.startswith("inventory:") and not re.match(
            r"^[a-zA-Z][a-zA-Z0-9+.\-]*://", source
        )

    @property
    def is_local_target(self) -> bool:
        return _is_local_target(self.target)

    def effective_concurrency(self) -> int:
        if self.concurrency is not None:
            return self.concurrency
        if self.is_local_target:
            return max(1, min(DEFAULT_LAMBDA_CONCURRENCY, os.cpu_count() or 1))
        return DEFAULT_LAMBDA_CONCURRENCY

    @property
    def payload_limit(self) -> int:
        """The invocation payload cap: async Lambda is 1 MB, everything else 6 MB."""
        if self.invocation_type == "event" and not _is_local_target(self.target):
            return ASYNC_PAYLOAD_LIMIT
        return SYNC_PAYLOAD_LIMIT

    @classmethod
    def option_names(cls) -> frozenset[str]:
        return frozenset(cls.field_names())

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The options in the order they are declared: documents written from them read the
        same every time."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> RunConfig:
        """Build from loosely typed values (a Lambda event, environment, JSON).

        Strings are parsed the way the CLI parses them, so one event works wherever it is sent.
        """
        unknown = sorted(set(values) - cls.option_names())
        if unknown:
            raise InvalidInput(f"unknown run option(s): {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        for name, value in values.items():
            if value is None:
                continue
            kwargs[name] = _coerce(name, value)
        if "source" not in kwargs:
            raise InvalidInput("missing source")
        return cls(**kwargs)


def _absolute(path: str) -> str:
    """The path made absolute, its links kept (a retry reads what the run read)."""
    return str(Path.cwd() / Path(path).expanduser())


def _is_local_target(target: str | None) -> bool:
    if target is None:
        return False
    return target.startswith("python:") or bool(re.search(r"\.py:[^:/\\]+$", target))


def _positive(name: str, value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{_flag(name)} must be a number, got {value!r}")
    if value <= 0:
        raise InvalidInput(f"{_flag(name)} must be greater than 0, got {value}")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


_INT_FIELDS = {"limit", "batch_size", "concurrency", "memory", "max_attempts", "list_parallelism"}
_SIZE_FIELDS = {"min_size", "max_size"}
_FLOAT_FIELDS = {"deadline", "timeout", "wait_for_workers"}
_DATE_FIELDS = {"modified_after", "modified_before"}
_TUPLE_FIELDS = {"include", "exclude"}


def _coerce(name: str, value: Any) -> Any:
    if name in _SIZE_FIELDS:
        return parse_size(value, flag=_flag(name))
    if name in _INT_FIELDS:
        return parse_int(value, flag=_flag(name))
    if name in _FLOAT_FIELDS:
        return parse_float(value, flag=_flag(name))
    if name in _DATE_FIELDS:
        return value if isinstance(value, datetime) else parse_datetime(value, flag=_flag(name))
    if name in _TUPLE_FIELDS:
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise InvalidInput(f"{_flag(name)} must be a list of glob patterns")
        return tuple(value)
    if name == "payload":
        return parse_payload(value) if isinstance(value, str) else value
    if name == "incremental":
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1", "yes"):
            return True
        if str(value).lower() in ("false", "0", "no", ""):
            return False
        raise InvalidInput(f"--incremental must be true or false, got {value!r}")
    if name == "max_failures":
        return str(value)
    if not isinstance(value, str):
        raise InvalidInput(f"{_flag(name)} must be a string, got {value!r}")
    return value


def parse_int(value: Any, *, flag: str) -> int:
    if isinstance(value, bool):
        raise InvalidInput(f"{flag} must be a whole number, got {value!r}")
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise InvalidInput(f"{flag} must be a whole number, got {value!r}") from None


def parse_float(value: Any, *, flag: str) -> float:
    if isinstance(value, bool):
        raise InvalidInput(f"{flag} must be a number of seconds, got {value!r}")
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{flag} must be a number of seconds, got {value!r}") from None
    if result != result or result in (float("inf"), float("-inf")):
        raise InvalidInput(f"{flag} must be a finite number, got {value!r}")
    return result


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: Any, *, flag: str) -> int:
    """Bytes from `1234`, `10KB`, `1.5MiB`... (KB = 1000, KiB = 1024)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE_RE.match(str(value))
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise InvalidInput(f"{flag}: cannot read {value!r} as a size (examples: 512, 10KB, 2MiB)")
    number = float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    return int(number)


def parse_datetime(value: Any, *, flag: str) -> datetime:
    """ISO 8601; a time without a zone is taken as UTC, as S3 reports times in UTC."""
    text = str(value).strip()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"{flag}: cannot read {value!r} as an ISO 8601 date or time "
            "(examples: 2024-01-31, 2024-01-31T12:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def parse_payload(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"--payload is not valid JSON: {exc.msg} at character {exc.pos}"
        ) from None
    if not isinstance(value, dict):
        raise InvalidInput(f"--payload must be a JSON object, got {type(value).__name__}")
    return value
