"""One error tree for hopper; botocore errors are translated into it here, at the boundary.

Every error carries the exit code the CLI uses, so no caller maps types to codes:

    HopperError                 exit 1: a run or an AWS call failed
    ├── InvalidInput            exit 2: bad input; raised before anything is invoked
    │   └── WorkerLoadError     a local worker file or module that does not load
    ├── AWSError                an AWS call failed; names the operation and the resource
    │   ├── NotFound            no such bucket, key or function (or not visible)
    │   └── AccessDenied        the credentials lack a permission
    ├── CredentialsError        no usable credentials, profile or region
    ├── TransientError          worth repeating: throttling, a 5xx, a dropped connection
    ├── LeaseHeld               exit 3: another run holds the state location
    ├── Conflict                a conditional write lost (the lease's; handled inside hopper)
    ├── DeployError             a stack operation ended in a failed state
    ├── InventoryError          an inventory report missing, incomplete, or not as its manifest says
    ├── StartFailure            a run that failed before it listed or sent anything
    └── Interrupted             exit 130: Ctrl-C cut a call short

Exit codes: 0 success, 1 failed, 2 bad input, 3 lease held, 130 interrupted (Ctrl-C).

`aws_errors(operation, resource)` wraps AWS calls: any botocore error raised inside it comes
out as one of the above, chained to the botocore cause.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_LEASE_HELD = 3
EXIT_INTERRUPTED = 130


class HopperError(Exception):
    """Base of every error hopper raises on purpose."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class InvalidInput(HopperError):
    """The caller's input cannot be used; raised before anything is invoked."""

    exit_code = EXIT_BAD_INPUT


class WorkerLoadError(InvalidInput):
    """A local worker file or module cannot be loaded, or lacks the function."""


class AWSError(HopperError):
    """An AWS call failed; names the operation and the resource it was about."""

    def __init__(
        self,
        message: str,
        *,
        operation: str,
        resource: str,
        code: str = "",
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.operation = operation
        self.resource = resource
        self.code = code


class NotFound(AWSError):
    """The bucket or function does not exist (or is not visible to these credentials)."""


class AccessDenied(AWSError):
    """The credentials lack a permission the operation needs."""


class CredentialsError(HopperError):
    """No usable AWS credentials or region."""


class TransientError(HopperError):
    """A call that may succeed if repeated: throttling, a 5xx, a dropped connection.

    `may_have_run` is true when the request may have reached the function before the failure
    (a read timeout or a connection closed mid-response); a synchronous call is then not
    repeated, because the worker may already have done the work.
    """

    def __init__(self, message: str, *, may_have_run: bool = False) -> None:
        super().__init__(message)
        self.may_have_run = may_have_run


class LeaseHeld(HopperError):
    """Another run holds the state location."""

    exit_code = EXIT_LEASE_HELD


class Conflict(HopperError):
    """A conditional write lost: the object exists, or changed since it was read."""


class DeployError(HopperError):
    """A stack operation failed; the message carries the failed resources' reasons."""


class InventoryError(HopperError):
    """An S3 Inventory report that is missing, incomplete, or does not match its manifest."""


class StartFailure(HopperError):
    """A run failed before it listed or sent anything: its error is all there is to say."""


class Interrupted(HopperError):
    """Ctrl-C cut a call short; what it was doing counts as not started."""

    exit_code = EXIT_INTERRUPTED


# Error codes that make every later call fail the same way: the run stops at the first one
# instead of reporting thousands of identical failures.
_NOT_FOUND_CODES = frozenset(
    {"NoSuchBucket", "ResourceNotFoundException", "NoSuchKey", "404", "NotFound"}
)
_ACCESS_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "403",
    }
)

_HINTS = {
    "NoSuchBucket": "check the bucket name and the region (--region)",
    "ResourceNotFoundException": "check the function name and the region (--region)",
    "AccessDenied": "the credentials in use lack this permission",
    "AccessDeniedException": "the credentials in use lack this permission",
    "InvalidAccessKeyId": "check the AWS credentials (--profile or the environment)",
    "UnrecognizedClientException": "check the AWS credentials (--profile or the environment)",
    "ExpiredToken": "refresh the AWS credentials",
    "ExpiredTokenException": "refresh the AWS credentials",
}


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError, or '' for anything else."""
    response: Any = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    code = response.get("Error", {}).get("Code", "")
    if not code:
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(status) if status else ""
    return str(code)


def error_message(exc: BaseException) -> str:
    response: Any = getattr(exc, "response", None)
    if isinstance(response, dict):
        message = response.get("Error", {}).get("Message")
        if message:
            return str(message)
    return str(exc)


# What S3 answers for an object that is not there (HEAD has no body, so only a status).
_NO_OBJECT_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


def is_missing_object(exc: BaseException) -> bool:
    """True when an S3 object call failed only because the object does not exist."""
    return error_code(exc) in _NO_OBJECT_CODES


# Throttling and service-side failures: worth the same call again after a pause.
RETRYABLE_CODES = frozenset(
    {
        "TooManyRequestsException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "SlowDown",
        "ResourceConflictException",
        "ResourceNotReadyException",
        "ServiceException",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)


def is_retryable(exc: BaseException) -> bool:
    """A botocore ClientError for throttling (429) or a service failure (5xx)."""
    response = getattr(exc, "response", None)
    return is_retryable_response(response if isinstance(response, dict) else {})


def is_retryable_response(response: dict[str, Any]) -> bool:
    """is_retryable, for the response a ClientError is made from."""
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    code = str(response.get("Error", {}).get("Code", ""))
    return code in RETRYABLE_CODES or status == 429 or status >= 500


def is_fatal_code(code: str) -> bool:
    """True when retrying, or trying the next item, cannot succeed either."""
    return code in _NOT_FOUND_CODES or code in _ACCESS_CODES


def boto_errors() -> tuple[type[Exception], ...]:
    """The exceptions an AWS call can raise, for `except` clauses at the boundary.

    botocore is imported here, when an exception is being matched, not when hopper loads:
    local mode never imports it.
    """
    import botocore.exceptions
    import botocore.parsers

    return (
        botocore.exceptions.ClientError,
        botocore.exceptions.BotoCoreError,
        # An endpoint that answers what botocore cannot parse (an emulator's internal error).
        botocore.parsers.ResponseParserError,
    )


def translate(exc: BaseException, *, operation: str, resource: str) -> HopperError:
    """Turn a botocore exception into a HopperError naming the operation and resource."""
    if isinstance(exc, HopperError):
        return exc
    name = type(exc).__name__
    if name in {"NoCredentialsError", "PartialCredentialsError", "ProfileNotFound"}:
        return CredentialsError(
            f"{operation} on {resource}: {exc}",
            hint="set AWS credentials, or pass --profile",
        )
    if name == "NoRegionError":
        return CredentialsError(
            f"{operation} on {resource}: no AWS region configured",
            hint="pass --region or set AWS_DEFAULT_REGION",
        )
    code = error_code(exc)
    text = f"{operation} on {resource} failed: {code or name}: {error_message(exc)}"
    hint = _HINTS.get(code)
    if code in _NOT_FOUND_CODES:
        return NotFound(text, operation=operation, resource=resource, code=code, hint=hint)
    if code in _ACCESS_CODES:
        return AccessDenied(text, operation=operation, resource=resource, code=code, hint=hint)
    return AWSError(text, operation=operation, resource=resource, code=code or name, hint=hint)


@contextmanager
def aws_errors(operation: str, resource: str) -> Iterator[None]:
    """Translate what the AWS calls inside raise, as httpx's map_httpcore_exceptions does.

    A HopperError raised inside passes unchanged; a botocore error becomes the HopperError that
    names `operation` and `resource`, with the botocore error as its `__cause__`.
    """
    try:
        yield
    except boto_errors() as exc:
        raise translate(exc, operation=operation, resource=resource) from exc
