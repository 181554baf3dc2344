from datetime import UTC, datetime

from hopper.items import Item
from hopper.selection import Selector

JAN = datetime(2024, 1, 15, tzinfo=UTC)
FEB = datetime(2024, 2, 15, tzinfo=UTC)


def keys(selector: Selector, items: list[Item]) -> list[str]:
    return [item.key for item in selector.filter(items)]


def test_include_and_exclude_match_the_full_key() -> None:
    items = [Item("a/x.csv"), Item("a/y.json"), Item("b/x.csv"), Item("x.csv")]
    assert keys(Selector(include=("a/*",)), items) == ["a/x.csv", "a/y.json"]
    assert keys(Selector(include=("*.csv",)), items) == ["a/x.csv", "b/x.csv", "x.csv"]
    assert keys(Selector(include=("*.csv",), exclude=("b/*",)), items) == ["a/x.csv", "x.csv"]
    # Several includes: any may match.
    assert keys(Selector(include=("*.json", "b/*")), items) == ["a/y.json", "b/x.csv"]


def test_globs_are_case_sensitive_like_s3() -> None:
    assert keys(Selector(include=("*.CSV",)), [Item("a.csv"), Item("b.CSV")]) == ["b.CSV"]


def test_size_bounds_are_inclusive() -> None:
    items = [Item("s", size=9), Item("m", size=10), Item("l", size=20), Item("xl", size=21)]
    assert keys(Selector(min_size=10, max_size=20), items) == ["m", "l"]


def test_modified_window() -> None:
    items = [Item("jan", last_modified=JAN), Item("feb", last_modified=FEB), Item("none")]
    mid = datetime(2024, 2, 1, tzinfo=UTC)
    assert keys(Selector(modified_after=mid), items) == ["feb"]
    assert keys(Selector(modified_before=mid), items) == ["jan"]
