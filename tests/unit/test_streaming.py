"""Memory must not grow with the number of keys: every stage streams."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator

import pytest

from hopper import RunConfig, plan, run
from hopper.items import Item, Page
from hopper.target import InvokeResult


class Synthetic:
    """A source of n keys, made on the fly, 1000 to a page like S3."""

    bucket: str | None = "synthetic"
    mode = "objects"
    key_root = "s3://synthetic/"

    def __init__(self, n: int) -> None:
        self.n = n

    def describe(self) -> str:
        return "synthetic"

    def pages(self, start_after: str | None = None) -> Iterator[Page]:
        for start in range(0, self.n, 1000):
            yield Page(
                tuple(
                    Item(f"key/{i:09}", size=i, etag="e")
                    for i in range(start, min(start + 1000, self.n))
                )
            )


class Sink:
    name = "sink"
    repeat_safe = True
    returns_results = False

    def __init__(self) -> None:
        self.count = 0

    def prepare(self) -> None:
        pass

    def close(self) -> None:
        pass

    def invoke(self, payload: bytes) -> InvokeResult:
        self.count += 1
        return InvokeResult(ok=True)


def peak_bytes(n: int, *, dispatch: bool) -> int:
    config = RunConfig(source="s3://synthetic", target="fn", batch_size=10, concurrency=4)
    tracemalloc.start()
    try:
        if dispatch:
            sink = Sink()
            summary = run(config, source=Synthetic(n), target=sink)
            assert summary.counts.dispatched == n and sink.count == n // 10
        else:
            assert plan(config, source=Synthetic(n)).selected == n
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_plan_memory_does_not_grow_with_keys() -> None:
    small, large = peak_bytes(2_000, dispatch=False), peak_bytes(30_000, dispatch=False)
    assert large < small + 500_000, (small, large)


@pytest.mark.slow
def test_run_memory_does_not_grow_with_keys() -> None:
    small, large = peak_bytes(2_000, dispatch=True), peak_bytes(30_000, dispatch=True)
    assert large < small + 500_000, (small, large)
