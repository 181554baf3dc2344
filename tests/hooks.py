"""RunHooks that hand what a run reports to one function, for tests that watch a run."""

from __future__ import annotations

from collections.abc import Callable

from hopper.engine import RunHooks
from hopper.items import Outcome
from hopper.summary import RunSummary


class OnOutcome(RunHooks):
    def __init__(self, call: Callable[[Outcome], object]) -> None:
        self._call = call

    def on_outcome(self, outcome: Outcome) -> None:
        self._call(outcome)


class OnProgress(RunHooks):
    def __init__(self, call: Callable[[RunSummary], object]) -> None:
        self._call = call

    def on_progress(self, summary: RunSummary) -> None:
        self._call(summary)
