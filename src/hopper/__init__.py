"""hopper: scheduled, reliable fan-out of S3 datasets (or a local folder) to Lambda workers.

The names below load on first use, so a process that needs one module (a local worker
process, the Lambda handler) does not pay for importing all of them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hopper.config import RunConfig
    from hopper.engine import RunHooks
    from hopper.errors import (
        AccessDenied,
        AWSError,
        Conflict,
        CredentialsError,
        DeployError,
        HopperError,
        InvalidInput,
        LeaseHeld,
        NotFound,
        StartFailure,
        TransientError,
        WorkerLoadError,
    )
    from hopper.items import Batch, BatchStatus, Item, Outcome, Stop, StopReason
    from hopper.retry import RetryPolicy
    from hopper.runner import plan, run
    from hopper.summary import PlanSummary, RunStatus, RunSummary

__version__ = "0.1.0"

_ERRORS = (
    "AccessDenied",
    "AWSError",
    "Conflict",
    "CredentialsError",
    "DeployError",
    "HopperError",
    "InvalidInput",
    "LeaseHeld",
    "NotFound",
    "StartFailure",
    "TransientError",
    "WorkerLoadError",
)
_HOMES = {
    "RunConfig": "config",
    "RunHooks": "engine",
    "plan": "runner",
    "run": "runner",
    **dict.fromkeys(_ERRORS, "errors"),
    "Batch": "items",
    "BatchStatus": "items",
    "Item": "items",
    "Outcome": "items",
    "Stop": "items",
    "StopReason": "items",
    "RetryPolicy": "retry",
    "PlanSummary": "summary",
    "RunStatus": "summary",
    "RunSummary": "summary",
}

__all__ = [
    "AWSError",
    "AccessDenied",
    "Batch",
    "BatchStatus",
    "Conflict",
    "CredentialsError",
    "DeployError",
    "HopperError",
    "InvalidInput",
    "Item",
    "LeaseHeld",
    "NotFound",
    "Outcome",
    "PlanSummary",
    "RetryPolicy",
    "RunConfig",
    "RunHooks",
    "RunStatus",
    "RunSummary",
    "StartFailure",
    "Stop",
    "StopReason",
    "TransientError",
    "WorkerLoadError",
    "__version__",
    "plan",
    "run",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'hopper' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"hopper.{home}"), name)
    globals()[name] = value
    return value
