"""The one place hopper makes sessions and clients.

Retries are set explicitly to botocore's `standard` mode. Listing is idempotent, so botocore
may retry it freely. Lambda invokes are retried by hopper's dispatcher instead (max_attempts=1
here), because only the dispatcher knows the deadline and whether a call may already have run.
"""

from __future__ import annotations

from typing import Any

from hopper.errors import translate

LIST_MAX_ATTEMPTS = 10
CONNECT_TIMEOUT = 10


def make_session(
    *, region: str | None = None, profile: str | None = None, lean: bool = False
) -> Any:
    """A boto3 session; with `lean`, the botocore session under it, which makes the same
    clients from the same credential chain. The Lambda handler takes the lean one: importing
    boto3 also imports s3transfer, about a tenth of a cold start, for nothing hopper uses."""
    import botocore.exceptions

    try:
        if lean:
            import botocore.session

            session = botocore.session.Session(profile=profile)
            if region is not None:
                session.set_config_variable("region", region)
            return session
        import boto3

        return boto3.session.Session(region_name=region, profile_name=profile)
    except botocore.exceptions.BotoCoreError as exc:
        raise translate(exc, operation="open session", resource=f"profile {profile}") from None


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
    import botocore.exceptions

    config = botocore.config.Config(
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=read_timeout,
        max_pool_connections=max(10, max_pool_connections),
    )
    # A boto3 session's client(), or a botocore session's create_client().
    make = getattr(session, "client", None) or session.create_client
    try:
        return make(service, config=config)
    except botocore.exceptions.BotoCoreError as exc:
        raise translate(exc, operation=f"create {service} client", resource=service) from None


def boto_errors() -> tuple[type[Exception], ...]:
    """The exceptions an AWS call can raise, for `except` clauses at the boundary."""
    import botocore.exceptions
    import botocore.parsers

    return (
        botocore.exceptions.ClientError,
        botocore.exceptions.BotoCoreError,
        # An endpoint that answers what botocore cannot parse (an emulator's internal error).
        botocore.parsers.ResponseParserError,
    )
