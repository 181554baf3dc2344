"""Partitioned parallel listing: many key ranges listed at once, merged back into S3 order.

A listing is cut into key ranges (lo, hi]; each range is listed with StartAfter=lo and stops
at the first key past hi, so the ranges together return every key exactly once. Ranges are
cut where the keys are: after each page, the page's own span (first key to last key) predicts
where the next pages will end, so a range whose remainder is worth sharing is split at those
predicted points whenever a worker is idle. Numbered keys, date folders and flat names all
split this way without knowing the layout beforehand; a wrong guess costs one short request.

The merge releases ranges strictly in key order, so the consumer sees one stream sorted as a
sequential listing would be, and a cursor taken from it means what it always meant. Pages
listed ahead of the merge are bounded (`ahead`), so memory stays flat however far the workers
could run.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from hopper.items import Item

# One page of a range: the items, the last key S3 returned (the next StartAfter), and whether
# S3 said there is more.
# `fetch(after, until)` may leave out keys past `until` (None: no bound); it must still
# return the greatest key S3 sent.
Fetch = Callable[[str, str | None], tuple[list[Item], str | None, bool]]

# Where keys differ they are read as mixed-radix numbers, each position in the smallest of
# these alphabets that holds every character seen there (so "0099" is followed by "0100", not
# "009:"). Any boundary is correct; a well-placed one is merely faster.
_DIGIT = "0123456789"
_LOWER = "abcdefghijklmnopqrstuvwxyz"
_UPPER = _LOWER.upper()
_ALPHABETS = tuple(
    "".join(sorted(chars))
    for chars in (
        _DIGIT,
        _LOWER,
        _UPPER,
        _DIGIT + "abcdef",
        _DIGIT + _LOWER,
        _DIGIT + _UPPER,
        _DIGIT + _UPPER + _LOWER,
        "".join(chr(c) for c in range(0x20, 0x7F)),
    )
)
_WIDTH = 24
_SAMPLE = 64
# A new range is sized to about this many pages of the page that predicted it: under two,
# so that most ranges finish in two requests, the second one short.
_PAGES_PER_RANGE = 1.9


@dataclass(eq=False)
class _Range:
    lo: str
    hi: str | None
    pages: deque[list[Item]] = field(default_factory=deque)
    busy: bool = False
    done: bool = False


def _common(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _alphabets(tails: list[str]) -> list[str]:
    width = min(_WIDTH, max(len(tail) for tail in tails))
    out = []
    for position in range(width):
        seen = {tail[position] for tail in tails if len(tail) > position}
        out.append(next((a for a in _ALPHABETS if seen <= set(a)), _ALPHABETS[-1]))
    return out


def _value(tail: str, alphabets: list[str]) -> int:
    value = 0
    for position, alphabet in enumerate(alphabets):
        char = tail[position] if position < len(tail) else alphabet[0]
        index = alphabet.find(char)
        if index < 0:  # outside the alphabet: the nearest end
            index = 0 if char < alphabet[0] else len(alphabet) - 1
        value = value * len(alphabet) + index
    return value


def _text(value: int, alphabets: list[str]) -> str:
    chars = []
    for alphabet in reversed(alphabets):
        value, index = divmod(value, len(alphabet))
        chars.append(alphabet[index])
    return "".join(reversed(chars))


def predict(keys: list[str], hi: str | None, count: int) -> list[str]:
    """Up to `count` boundaries after the last of `keys` (one sorted page), spaced as far
    apart as _PAGES_PER_RANGE such pages would reach."""
    if count <= 0 or len(keys) < 2 or keys[0] >= keys[-1]:
        return []
    first, last = keys[0], keys[-1]
    cut = _common(first, last)
    # Where keys differ inside a number or a word, the number's leading digits can carry:
    # read it whole ("0000" + "9990" is followed by "00010000", not by "0000" + "99:0").
    while cut > 0 and last[cut - 1].isascii() and last[cut - 1].isalnum():
        cut -= 1
    stem = last[:cut]
    sample = [*keys[:: max(1, len(keys) // _SAMPLE)], last]
    alphabets = _alphabets([key[len(stem) :] for key in sample])
    low, high = _value(first[len(stem) :], alphabets), _value(last[len(stem) :], alphabets)
    step = max(1, int((high - low) * _PAGES_PER_RANGE))
    top = 1
    for alphabet in alphabets:
        top *= len(alphabet)
    out: list[str] = []
    value = high
    for _ in range(count):
        value += step
        if value >= top:
            break
        boundary = stem + _text(value, alphabets)
        if boundary <= (out[-1] if out else last):
            continue
        if hi is not None and boundary >= hi:
            break
        out.append(boundary)
    return out


class Partitioned:
    """Lists (after, ∞) with `parallelism` workers; iterate for pages in key order."""

    def __init__(
        self,
        fetch: Fetch,
        *,
        after: str,
        first_page: list[str],
        parallelism: int,
        cuts: Iterable[str] = (),
        ahead: int | None = None,
    ) -> None:
        self._fetch = fetch
        self._parallelism = parallelism
        self._ahead = ahead if ahead is not None else 4 * parallelism
        self._ranges: list[_Range] = []
        self._lock = threading.Condition()
        self._error: BaseException | None = None
        self._closed = False
        self._buffered = 0
        # Known boundaries first (the folders of the listing, when it has them), then the
        # first page (already listed by the caller) predicts where its neighbours end.
        bounds = sorted({cut for cut in cuts if cut > after})
        highs: list[str | None] = [*bounds, None]
        self._ranges = [_Range(lo, hi) for lo, hi in zip([after, *bounds], highs, strict=True)]
        self._split(self._ranges[0], [*first_page, after], parallelism - len(bounds))

    def _split(self, rng: _Range, keys: list[str], pieces: int) -> None:
        """Give the predicted far part of `rng` (which starts after keys[-1]) to new ranges."""
        cuts = predict(keys, rng.hi, pieces - 1)
        if not cuts:
            return
        highs: list[str | None] = [*cuts[1:], rng.hi]
        parts = [_Range(lo, hi) for lo, hi in zip(cuts, highs, strict=True)]
        rng.hi = cuts[0]
        at = self._ranges.index(rng) + 1
        self._ranges[at:at] = parts

    def __iter__(self) -> Iterator[list[Item]]:
        threads = [
            threading.Thread(target=self._work, name="hopper-list", daemon=True)
            for _ in range(self._parallelism)
        ]
        for thread in threads:
            thread.start()
        try:
            while True:
                with self._lock:
                    while True:
                        if self._error is not None:
                            raise self._error
                        head = self._ranges[0] if self._ranges else None
                        if head is None:
                            return
                        if head.pages:
                            page = head.pages.popleft()
                            self._buffered -= 1
                            self._lock.notify_all()
                            break
                        if head.done:
                            self._ranges.pop(0)
                            self._lock.notify_all()
                            continue
                        self._lock.wait()
                yield page
        finally:
            with self._lock:
                self._closed = True
                self._lock.notify_all()
            for thread in threads:
                thread.join(timeout=60)

    def _fetchable(self) -> list[_Range]:
        """Ranges a free worker may list now, earliest first.

        Past `ahead` buffered pages, only ranges the merge reaches before any buffered page
        may be listed: they are what the consumer waits for, so memory stays bounded while
        the head of the listing keeps moving.
        """
        ready = [rng for rng in self._ranges if not rng.busy and not rng.done]
        if self._buffered < self._ahead:
            return ready
        if self._buffered >= 2 * self._ahead:
            return ready[:1] if self._ranges and ready and ready[0] is self._ranges[0] else []
        first_buffered = next(
            (i for i, rng in enumerate(self._ranges) if rng.pages), len(self._ranges)
        )
        return [
            rng
            for i, rng in enumerate(self._ranges)
            if i <= first_buffered and not rng.busy and not rng.done
        ]

    def _next(self) -> _Range | None:
        ready = self._fetchable()
        return ready[0] if ready else None

    def _work(self) -> None:
        while True:
            with self._lock:
                while True:
                    if self._closed or self._error is not None:
                        return
                    rng = self._next()
                    if rng is not None:
                        break
                    if not self._ranges:
                        return
                    self._lock.wait()
                rng.busy = True
                lo, hi = rng.lo, rng.hi
            try:
                items, last, truncated = self._fetch(lo, hi)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer to raise
                with self._lock:
                    self._error = self._error or exc
                    self._lock.notify_all()
                return
            with self._lock:
                rng.busy = False
                kept = (
                    items
                    if hi is None or not items or items[-1].key <= hi
                    else [item for item in items if item.key <= hi]
                )
                finished = not truncated or last is None or (hi is not None and last >= hi)
                if kept:
                    rng.pages.append(kept)
                    self._buffered += 1
                if finished:
                    rng.done = True
                else:
                    assert last is not None
                    rng.lo = last
                    busy = sum(1 for other in self._ranges if other.busy)
                    idle = self._parallelism - busy - len(self._fetchable())
                    if idle > 0 and items:
                        self._split(rng, [*(item.key for item in items), last], idle + 1)
                self._lock.notify_all()
