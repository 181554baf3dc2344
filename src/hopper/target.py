"""The contract between dispatch and a target: what every target does, and the two abilities
a target may add, each a protocol that dispatch checks for.

Every target takes one encoded event at a time: `invoke(payload) -> InvokeResult`. It raises
TransientError for what may succeed when repeated, another HopperError for what stops the run
(no such function, access denied), and returns an InvokeResult otherwise: `ok=False` when the
call failed for this batch only (the payload was refused); `ok=True` when the worker got it,
with `worker` saying what it made of it when that is known at once (local workers, synchronous
invokes) and None when it is not (an event invoke).

The abilities:
- `Multiplexing`: many invokes in flight from one thread over one set of connections (Lambda
  on the fast transport). Dispatch then runs its one-thread loop.
- `Chunking`: a chunk of batches handed to one worker at once, which builds each event itself
  (local worker processes). Dispatch then hands over chunks from its threads.
- `Abortable`: calls in flight can be cut short (a second Ctrl-C); they then count as not
  started, so they stay retryable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from hopper.event import EventRecipe
from hopper.items import Batch, WorkerStatus


@dataclass(frozen=True, slots=True)
class InvokeResult:
    ok: bool
    request_id: str | None = None
    result: Any = None
    error_type: str | None = None
    error: str | None = None
    worker: WorkerStatus | None = None


class Target(Protocol):
    name: str
    # False when a repeated call after an ambiguous failure could run the worker twice.
    repeat_safe: bool

    def prepare(self) -> None:
        """Check the target is there and get ready; the only step allowed to be slow."""
        ...

    def invoke(self, payload: bytes) -> InvokeResult: ...

    def close(self) -> None: ...


# The answer to one multiplexed invoke: call it for the InvokeResult, or for what invoke()
# would have raised.
Answer = Callable[[], InvokeResult]


class Stream(Protocol):
    """Invokes in flight from one thread, each known by the token it was started with."""

    def start(self, token: int, payload: bytes) -> None: ...

    def wait(self, timeout: float) -> list[tuple[int, Answer]]:
        """The invokes answered since the last call, waiting up to `timeout` for one."""
        ...

    def wake(self) -> None:
        """Make a wait() in progress return now (from another thread)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Multiplexing(Protocol):
    def multiplexer(self, limit: int) -> Stream | None:
        """A stream of up to `limit` invokes in flight, or None if this target cannot make one
        now (the boto3 transport): dispatch then uses its threads."""
        ...


@runtime_checkable
class Chunking(Protocol):
    def chunk_size(self) -> int:
        """How many batches to hand over at once now (1 until the target has timed some)."""
        ...

    def invoke_chunk(
        self,
        batches: Sequence[Batch],
        recipe: EventRecipe,
        *,
        on_result: Callable[[int, InvokeResult], None],
        keep_going: Callable[[], bool],
    ) -> None:
        """Invoke each batch (attempt 1) as its own invocation; `on_result(i, result)` hears
        of each as it ends. Once `keep_going()` is false, batches not yet started are not
        started, and get no result. Every worker failure is a result; only what stops the
        run (the worker cannot be loaded) is raised."""
        ...


@runtime_checkable
class Abortable(Protocol):
    def abort(self) -> None:
        """Cut the calls in flight short, from another thread. Each then ends as not started:
        invoke() raises Interrupted, invoke_chunk() gives it no result."""
        ...
