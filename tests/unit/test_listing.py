"""The lean ListObjectsV2 reader and the partitioned listing, checked against slow references."""

from __future__ import annotations

import bisect
import random
import threading
from datetime import UTC, datetime
from urllib.parse import quote_plus
from xml.sax.saxutils import escape

import pytest

from hopper.items import Item
from hopper.wire.listing import parse_page, parse_tree
from hopper.wire.partition import Partitioned, predict

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
AWKWARD = [
    "a plain/key.csv",
    "plus+sign & amp.txt",
    "ünïcødé/данные/文件 🚀.json",
    "new\nline.txt",
    "quote\"and'apos<lt>.txt",
    "percent%20literal",
    "ctrl\x01char",
]


def page_xml(
    keys: list[str],
    *,
    truncated: bool = False,
    token: str | None = None,
    checksum: bool = False,
    pretty: bool = False,
    prefixes: tuple[str, ...] = (),
) -> bytes:
    rows = []
    for i, key in enumerate(keys):
        extra = "<ChecksumAlgorithm>CRC32</ChecksumAlgorithm>" if checksum else ""
        rows.append(
            f"<Contents><Key>{escape(quote_plus(key, safe='/'))}</Key>"
            f"<LastModified>2026-0{1 + i % 3}-02T03:04:05.{i % 1000:03}Z</LastModified>"
            f"<ETag>&quot;{i:032x}&quot;</ETag>{extra}<Size>{i * 7}</Size>"
            "<StorageClass>STANDARD</StorageClass></Contents>"
        )
    rows += [
        f"<CommonPrefixes><Prefix>{quote_plus(p, safe='/')}</Prefix></CommonPrefixes>"
        for p in prefixes
    ]
    head = f'<ListBucketResult xmlns="{NS}"><Name>b</Name><IsTruncated>{str(truncated).lower()}</IsTruncated>'
    if token:
        head += f"<NextContinuationToken>{escape(token)}</NextContinuationToken>"
    glue = "\n  " if pretty else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        + head
        + glue
        + glue.join(rows)
        + "</ListBucketResult>"
    ).encode()


def expected(keys: list[str]) -> list[Item]:
    return [
        Item(
            key,
            i * 7,
            f"{i:032x}",
            datetime(2026, 1 + i % 3, 2, 3, 4, 5, (i % 1000) * 1000, tzinfo=UTC),
        )
        for i, key in enumerate(keys)
    ]


@pytest.mark.parametrize("checksum", [False, True])
@pytest.mark.parametrize("pretty", [False, True])
def test_both_readers_give_every_field_of_every_key(checksum: bool, pretty: bool) -> None:
    keys = sorted(AWKWARD)
    body = page_xml(keys, truncated=True, token="tok+/=&x", checksum=checksum, pretty=pretty)
    for page in (parse_page(body, "objects"), parse_tree(body, "objects")):
        assert page.items == expected(keys)
        assert page.last == keys[-1]
        assert page.truncated is True
        assert page.token == "tok+/=&x"


def test_until_cuts_the_items_but_not_the_last_key() -> None:
    keys = [f"k{i:03}" for i in range(50)]
    body = page_xml(keys)
    for page in (parse_page(body, "objects", "k019"), parse_tree(body, "objects", "k019")):
        assert [item.key for item in page.items] == keys[:20]
        assert page.last == "k049" and page.truncated is False and page.token is None


def test_prefixes_mode_reads_common_prefixes_and_the_greater_end() -> None:
    body = page_xml(["a.txt", "zz.txt"], prefixes=("b dir/", "c+d/"))
    page = parse_page(body, "prefixes")
    assert [item.key for item in page.items] == ["b dir/", "c+d/"]
    assert page.last == "zz.txt"


@pytest.mark.parametrize(
    ("first", "last", "hi", "expected"),
    [
        ("day=00/part 00000000", "day=00/part 00009990", None, 10),
        ("obj-0000000", "obj-0000999", "obj-0100000", 10),
        ("0a1b2c", "0f9e8d", None, 10),
        ("obj-0000000", "obj-0000999", "obj-0005000", 2),
        # Non-ASCII where keys differ: no prediction, only folder cuts split such a listing.
        ("données/一", "données/丁", None, 0),
    ],
)
def test_predicted_boundaries_rise_after_the_page_and_stop_before_hi(
    first: str, last: str, hi: str | None, expected: int
) -> None:
    cuts = predict([first, last], hi, 10)
    assert len(cuts) == expected
    assert cuts == sorted(set(cuts))
    assert all(cut > last for cut in cuts)
    assert hi is None or all(cut < hi for cut in cuts)


def keyspaces() -> list[list[str]]:
    rng = random.Random(7)
    alphabet = "ab/ -_.09ZÄ文🚀+%"
    return [
        [f"obj-{i:06}" for i in range(5000)],
        [f"day={i % 7:02}/part {i:07}.csv" for i in range(4000)],
        ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(3000)],
        [f"{rng.getrandbits(64):016x}" for _ in range(3000)],
        ["only-one"],
    ]


@pytest.mark.parametrize("keys", keyspaces(), ids=["numbered", "folders", "random", "hex", "one"])
@pytest.mark.parametrize("parallelism", [2, 16])
def test_partitions_return_every_key_once_in_order(keys: list[str], parallelism: int) -> None:
    keys = sorted(set(keys))
    page_size = 37
    calls: list[str] = []
    lock = threading.Lock()

    def fetch(after: str, until: str | None) -> tuple[list[Item], str | None, bool]:
        with lock:
            calls.append(after)
        start = bisect.bisect_right(keys, after)
        page = keys[start : start + page_size]
        items = [Item(k) for k in page if until is None or k <= until]
        return items, page[-1] if page else None, start + page_size < len(keys)

    first = keys[:page_size]
    folders = sorted({k.split("/", 1)[0] + "/\U0010ffff" for k in keys if "/" in k})[:5]
    listed = [
        item.key
        for page in Partitioned(
            fetch, after=first[-1], first_page=first, parallelism=parallelism, cuts=folders
        )
        for item in page
    ]
    assert listed == keys[page_size:]
    # The work is spread: no more than about one page of requests per page of keys, plus probes.
    assert len(calls) <= len(keys) / page_size * 2 + 4 * parallelism


def test_a_failed_page_stops_the_listing_with_its_error() -> None:
    keys = [f"k{i:05}" for i in range(2000)]

    def fetch(after: str, until: str | None) -> tuple[list[Item], str | None, bool]:
        start = bisect.bisect_right(keys, after)
        if start > 700:
            raise ConnectionError("page lost")
        page = keys[start : start + 50]
        return [Item(k) for k in page if until is None or k <= until], page[-1], True

    with pytest.raises(ConnectionError, match="page lost"):
        for _ in Partitioned(fetch, after=keys[49], first_page=keys[:50], parallelism=4):
            pass


def test_a_consumer_that_stops_early_stops_the_workers() -> None:
    keys = [f"k{i:06}" for i in range(100_000)]

    def fetch(after: str, until: str | None) -> tuple[list[Item], str | None, bool]:
        start = bisect.bisect_right(keys, after)
        page = keys[start : start + 100]
        return [Item(k) for k in page if until is None or k <= until], page[-1], True

    before = threading.active_count()
    ranges = Partitioned(fetch, after=keys[99], first_page=keys[:100], parallelism=8, ahead=4)
    for n, _ in enumerate(ranges):
        if n == 3:
            break
    assert threading.active_count() == before
