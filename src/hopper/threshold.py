"""--max-failures: stop a run once more than N items, or more than P% of them, failed: their
dispatch failed, or their worker did (as far as that is known when the batch settles)."""

from __future__ import annotations

from hopper.errors import InvalidInput
from hopper.items import NOT_DISPATCHED, Outcome, Stop, StopReason

# A percentage threshold is judged once this many items have settled, not on the first one.
PERCENT_SAMPLE = 20


def parse_threshold(text: str) -> tuple[float, bool]:
    """`--max-failures`: ("10" -> (10, False)), ("5%" -> (5.0, True))."""
    value = str(text).strip()
    percent = value.endswith("%")
    number = value.removesuffix("%").strip()
    try:
        amount = float(number) if percent else int(number)
    except ValueError:
        raise InvalidInput(
            f"--max-failures must be a count (10) or a percentage (5%), got {text!r}"
        ) from None
    if amount < 0 or (percent and amount > 100):
        raise InvalidInput(
            f"--max-failures must be a count >= 0 or a percentage 0-100%, got {text!r}"
        )
    return float(amount), percent


class Threshold:
    """Counts settled and failed items; says when the run must stop.

    `add` is called from the dispatch threads one outcome at a time, `crossed` from whichever
    thread is about to take the next batch: both read and write plain counters only.
    """

    def __init__(self, text: str | None) -> None:
        self.limit: float | None = None
        self.percent = False
        if text is not None:
            self.limit, self.percent = parse_threshold(text)
        self.failed = 0
        self.settled = 0

    @property
    def active(self) -> bool:
        return self.limit is not None

    def add(self, outcome: Outcome) -> None:
        if self.limit is None or outcome.status is NOT_DISPATCHED:
            return
        size = len(outcome.batch.items)
        self.settled += size
        if outcome.failed:
            self.failed += size

    def crossed(self) -> Stop | None:
        if self.limit is None:
            return None
        if self.percent:
            if self.settled < PERCENT_SAMPLE:
                return None
            share = 100.0 * self.failed / self.settled
            if share > self.limit:
                return Stop(
                    StopReason.FAILURE_THRESHOLD,
                    f"failure threshold crossed: {self.failed} of {self.settled} items failed "
                    f"({share:.1f}% > {self.limit:g}%)",
                )
            return None
        if self.failed > self.limit:
            return Stop(
                StopReason.FAILURE_THRESHOLD,
                f"failure threshold crossed: {self.failed} items failed (more than {self.limit:g})",
            )
        return None
