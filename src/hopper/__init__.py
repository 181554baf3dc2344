"""hopper: scheduled, reliable fan-out of S3 datasets (or a local folder) to Lambda workers."""

from hopper.config import RunConfig
from hopper.dispatch import Outcome, RetryPolicy
from hopper.engine import plan, run
from hopper.errors import AccessDenied, AWSError, HopperError, InvalidInput, NotFound
from hopper.items import Batch, Item
from hopper.summary import PlanSummary, RunSummary

__version__ = "0.1.0"

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
