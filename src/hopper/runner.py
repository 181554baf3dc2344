"""hopper.run and hopper.plan: the one way to run, and to plan.

With config.state set, a run keeps its state there (lease, ledger, checkpoint, resume,
incremental, tracking: hopper.runstate.run); without, it is the engine's run alone. The CLI,
the Lambda handler and library users all come through here.
"""

from __future__ import annotations

import threading
from typing import Any

from hopper.config import RunConfig
from hopper.engine import RunHooks
from hopper.engine import count as count_once
from hopper.engine import plan as plan_once
from hopper.engine import run as run_once
from hopper.errors import InvalidInput
from hopper.retry import RetryPolicy
from hopper.sources import Source
from hopper.summary import PlanSummary, RunSummary
from hopper.target import Target


def run(
    config: RunConfig,
    *,
    session: Any = None,
    hooks: RunHooks | None = None,
    stop: threading.Event | None = None,
    wait: bool = False,
    retry_of: str | None = None,
    source: Source | None = None,
    target: Target | None = None,
    retry: RetryPolicy | None = None,
) -> RunSummary:
    """Run `config` once and return its summary; raise HopperError if it cannot start.

    `session`: a boto3 (or botocore) Session for AWS sources, targets and state; by default
    one is made when needed. `hooks` observe the run (progress, outcomes). Setting `stop` ends
    dispatch after the batches in flight (Ctrl-C). With state only: `wait` waits for another
    run's lease instead of raising LeaseHeld, and `retry_of` re-sends what a recorded run left
    failed or unsent.
    """
    if config.state is None:
        if wait:
            raise InvalidInput("--wait needs --state: it waits for the run holding that state")
        if retry_of is not None:
            raise InvalidInput("a retry needs --state: that is where the run is recorded")
        return run_once(
            config,
            session=session,
            source=source,
            target=target,
            hooks=hooks,
            stop=stop,
            retry=retry,
        )
    from hopper.runstate.run import run_with_state

    return run_with_state(
        config,
        session=session,
        hooks=hooks,
        stop=stop,
        wait=wait,
        retry_of=retry_of,
        source=source,
        target=target,
        retry=retry,
    )


def plan(config: RunConfig, *, session: Any = None, source: Source | None = None) -> PlanSummary:
    """What `run` would do, invoking nothing. An incremental job with state reads its state
    (and writes nothing) to leave out what has not changed."""
    if config.incremental and config.state is not None and source is None:
        from hopper.runstate.run import plan_with_state

        return plan_with_state(config, session=session)
    return plan_once(config, session=session, source=source)


def count(config: RunConfig, *, session: Any = None) -> int:
    """How many items the listing selects, invoking nothing (engine.count)."""
    return count_once(config, session=session)
