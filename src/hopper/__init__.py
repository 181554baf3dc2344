"""hopper: scheduled, reliable fan-out of S3 datasets (or a local folder) to Lambda workers.

The names below load on first use, so a process that needs one module (a local worker
process, the Lambda handler) does not pay for importing all of them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hopper.config import RunConfig
    from hopper.dispatch import Outcome, RetryPolicy
    from hopper.engine import plan, run
    from hopper.errors import AccessDenied, AWSError, HopperError, InvalidInput, NotFound
    from hopper.items import Batch, Item
    from hopper.summary import PlanSummary, RunSummary

__version__ = "0.1.0"

_HOMES = {
    "RunConfig": "config",
    "Outcome": "dispatch",
    "RetryPolicy": "dispatch",
    "plan": "engine",
    "run": "engine",
    "AccessDenied": "errors",
    "AWSError": "errors",
    "HopperError": "errors",
    "InvalidInput": "errors",
    "NotFound": "errors",
    "Batch": "items",
    "Item": "items",
    "PlanSummary": "summary",
    "RunSummary": "summary",
}

__all__ = [
    "AWSError",
    "AccessDenied",
    "Batch",
    "HopperError",
    "InvalidInput",
    "Item",
    "NotFound",
    "Outcome",
    "PlanSummary",
    "RetryPolicy",
    "RunConfig",
    "RunSummary",
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
