"""The one place hopper makes sessions and clients, and reads S3 URLs.

A `session` anywhere in hopper is a boto3 Session, or the botocore Session under one (the
Lambda handler's, which spares it importing boto3): both make the same clients here.

Retries are set explicitly to botocore's `standard` mode. Listing is idempotent, so botocore
may retry it freely. Lambda invokes are retried by hopper's dispatcher instead (max_attempts=1
here), because only the dispatcher knows the deadline and whether a call may already have run.
"""

from __future__ import annotations

import re
from typing import Any

from hopper.errors import InvalidInput, aws_errors

LIST_MAX_ATTEMPTS = 10
CONNECT_TIMEOUT = 10
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


def make_session(
    *, region: str | None = None, profile: str | None = None, lean: bool = False
) -> Any:
    """A boto3 session; with `lean`, the botocore session under it, which makes the same
    clients from the same credential chain. The Lambda handler takes the lean one: importing
    boto3 also imports s3transfer, about a tenth of a cold start, for nothing hopper uses."""
    with aws_errors("open session", f"profile {profile}"):
        if lean:
            import botocore.session

            session = botocore.session.Session(profile=profile)
            if region is not None:
                session.set_config_variable("region", region)
            return session
        import boto3

        return boto3.session.Session(region_name=region, profile_name=profile)


def client(
    session: Any,
    service: str,
    *,
    max_attempts: int = LIST_MAX_ATTEMPTS,
    read_timeout: float = 60,
    max_pool_connections: int = 10,
) -> Any:
    """A client with explicit standard-mode retries. Makes no network call."""
    import botocore.config

    config = botocore.config.Config(
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=read_timeout,
        max_pool_connections=max(10, max_pool_connections),
    )
    # A boto3 session's client(), or a botocore session's create_client().
    make = getattr(session, "client", None) or session.create_client
    with aws_errors(f"create {service} client", service):
        return make(service, config=config)


def split_s3_url(text: str, *, what: str) -> tuple[str, str]:
    """`s3://BUCKET[/PREFIX]` -> (bucket, prefix), the bucket name checked; `what` names the
    option in the error (source, --state)."""
    bucket, _, prefix = text.removeprefix("s3://").partition("/")
    if not bucket:
        raise InvalidInput(f"{what} {text!r} has no bucket: use s3://BUCKET[/PREFIX]")
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise InvalidInput(
            f"{what} {text!r}: {bucket!r} is not a valid S3 bucket name "
            "(3-63 lowercase letters, digits, dots and hyphens)"
        )
    return bucket, prefix
