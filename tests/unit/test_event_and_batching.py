import json
import random
import string
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone

import pytest

from hopper.batching import EventSizer, Oversize, Passed, make_batches
from hopper.event import encode_event, idempotency_key
from hopper.items import Batch, Item


def batches_of(
    items: Sequence[Item | Passed],
    size: int,
    limit: int = 10**9,
    payload: dict[str, object] | None = None,
) -> list[Batch | Oversize | Passed]:
    sizer = EventSizer(run_id="run-1", payload=payload or {}, bucket="bkt")
    return list(make_batches(items, batch_size=size, limit=limit, sizer=sizer))


def test_one_item_batch_keeps_the_seed_shape() -> None:
    batch = Batch(index=7, items=(Item("datasets/2024-01/", size=None),))
    seed = {"config_bucket": "bkt", "lambda_function": "worker"}
    event = json.loads(encode_event(batch=batch, run_id="r", attempt=2, payload=seed, bucket="bkt"))
    assert event["config_bucket"] == "bkt"
    assert event["lambda_function"] == "worker"
    assert event["dataset_prefix"] == "datasets/2024-01/"
    assert event["bucket"] == "bkt"
    assert event["items"] == [{"key": "datasets/2024-01/"}]
    assert event["hopper"]["run_id"] == "r"
    assert event["hopper"]["batch"] == 7
    assert event["hopper"]["attempt"] == 2
    assert len(event["hopper"]["idempotency_key"]) == 32


def test_multi_item_batches_have_no_dataset_prefix_and_local_has_no_bucket() -> None:
    batch = Batch(index=1, items=(Item("a", size=1, path="/d/a"), Item("b", size=2, path="/d/b")))
    event = json.loads(encode_event(batch=batch, run_id="r", attempt=1, payload={}, bucket=None))
    assert "dataset_prefix" not in event
    assert "bucket" not in event
    assert [i["path"] for i in event["items"]] == ["/d/a", "/d/b"]


def test_idempotency_key_is_stable_across_attempts_and_differs_between_batches() -> None:
    one = Batch(index=1, items=(Item("a", etag="e1"),))
    events = [
        json.loads(encode_event(batch=one, run_id="r", attempt=n, payload={}, bucket="b"))
        for n in (1, 2, 3)
    ]
    assert len({e["hopper"]["idempotency_key"] for e in events}) == 1
    changed = Batch(index=1, items=(Item("a", etag="e2"),))
    assert idempotency_key("r", one) != idempotency_key("r", changed)
    assert idempotency_key("r", one) != idempotency_key("other-run", one)


def test_batches_by_count_keep_key_order() -> None:
    items = [Item(f"k{i:03}") for i in range(10)]
    out = batches_of(items, 4)
    assert all(isinstance(b, Batch) for b in out)
    assert [len(b.items) for b in out if isinstance(b, Batch)] == [4, 4, 2]
    assert [b.index for b in out if isinstance(b, Batch)] == [1, 2, 3]
    flat = [i.key for b in out if isinstance(b, Batch) for i in b.items]
    assert flat == [i.key for i in items]


def test_byte_cap_bounds_every_event() -> None:
    rng = random.Random(7)
    items = [
        Item("".join(rng.choices(string.ascii_letters + "ü/ +%", k=rng.randint(1, 300))), size=i)
        for i in range(400)
    ]
    limit = 4000
    out = batches_of(items, 50, limit=limit, payload={"job": "x" * 100})
    sent = [b for b in out if isinstance(b, Batch)]
    assert not [b for b in out if isinstance(b, Oversize)]
    assert sum(len(b.items) for b in sent) == len(items)
    for batch in sent:
        for attempt in (1, 99):
            body = encode_event(
                batch=batch,
                run_id="run-1",
                attempt=attempt,
                payload={"job": "x" * 100},
                bucket="bkt",
            )
            assert len(body) <= limit
    # The cap, not the count, cut these batches.
    assert max(len(b.items) for b in sent) < 50


def test_an_item_too_large_alone_is_reported_not_dropped() -> None:
    items = [Item("small-1"), Item("huge-" + "x" * 5000), Item("small-2")]
    out = batches_of(items, 10, limit=1000)
    assert [type(b).__name__ for b in out] == ["Batch", "Oversize", "Batch"]
    oversize = out[1]
    assert isinstance(oversize, Oversize)
    assert oversize.batch.first_key.startswith("huge-")
    assert "over the 1000-byte" in oversize.reason
    assert [
        b.batch.index if isinstance(b, Oversize) else b.index
        for b in out
        if not isinstance(b, Passed)
    ] == [1, 2, 3]


@pytest.mark.parametrize("size", [1, 3])
def test_sizer_bound_is_tight(size: int) -> None:
    items = [Item(f"key-{i}", size=i, etag="abc") for i in range(size)]
    batch = Batch(index=1, items=tuple(items))
    sizer = EventSizer(run_id="run-1", payload={}, bucket="b")
    from hopper.event import item_bytes

    bound = sizer.size(
        sum(item_bytes(i) for i in items), len(items), items[0].key if size == 1 else None
    )
    actual = len(encode_event(batch=batch, run_id="run-1", attempt=1, payload={}, bucket="b"))
    assert actual <= bound <= actual + 40


@pytest.mark.parametrize(
    "item",
    [
        Item("plain.csv"),
        Item("with space/and+plus.txt", size=0, etag="0-1"),
        Item('quote"back\\slash', size=123456789, etag='"x"'),
        Item("ctrl\x01\x1f\ttab\nnl", last_modified=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
        Item("ünïcødé/данные/文件 🚀", last_modified=datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)),
        Item("\u2028line\u2029sep\x7f", path="/tmp/ä b/\\c", etag=""),
        Item("naive", last_modified=datetime(2026, 1, 2, 3, 4, 5)),
        Item("naive-micro", last_modified=datetime(2026, 1, 2, 3, 4, 5, 1)),
        Item("year-one", last_modified=datetime(1, 1, 1, tzinfo=UTC)),
        *(
            Item(f"offset-{i}", last_modified=datetime(2026, 5, 6, 7, 8, 9, micro, tzinfo=zone))
            for i, (micro, zone) in enumerate(
                (micro, timezone(offset))
                for micro in (0, 999999)
                for offset in (
                    timedelta(hours=5, minutes=30),
                    -timedelta(hours=11),
                    timedelta(hours=1, seconds=7),
                    -timedelta(minutes=1, microseconds=5),
                )
            )
        ),
    ],
)
def test_item_bytes_counts_exactly_what_json_writes(item: Item) -> None:
    from hopper.event import dumps, item_bytes

    assert item_bytes(item) == len(dumps(item.to_event()))


def test_an_item_passed_over_names_the_batch_it_follows() -> None:
    steps = batches_of(
        [Passed("a"), Item("b"), Passed("c"), Item("d"), Item("e"), Passed("f")], size=2
    )
    # "a" precedes every batch; "c" falls inside the open batch 1 (b, d); "f" after batch 2.
    assert steps == [
        Passed("a", 0),
        Passed("c", 1),
        Batch(1, (Item("b"), Item("d"))),
        Passed("f", 2),
        Batch(2, (Item("e"),)),
    ]


@pytest.mark.parametrize("payload", [{}, {"job": "nightly", "n": [1, 2]}])
@pytest.mark.parametrize("batch_size", [1, 3, 7])
def test_the_exact_size_is_the_length_of_the_first_attempts_event(
    payload: dict[str, object], batch_size: int
) -> None:
    rng = random.Random(batch_size)
    alphabet = string.ascii_letters + 'ü/ +%"\\\n日🚀'
    items = [
        Item(
            "".join(rng.choices(alphabet, k=rng.randint(1, 40))),
            size=rng.choice([None, 0, 10**12]),
            etag=rng.choice([None, "d41d8cd98f00b204e9800998ecf8427e"]),
            last_modified=rng.choice([None, datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)]),
        )
        for _ in range(1500)  # batch numbers of one to four digits
    ]
    sizer = EventSizer(run_id="run-1", payload=payload, bucket="bkt")
    out = list(make_batches(items, batch_size=batch_size, limit=10**9, sizer=sizer))
    for batch in out:
        assert isinstance(batch, Batch)
        body = encode_event(batch=batch, run_id="run-1", attempt=1, payload=payload, bucket="bkt")
        assert sizer.exact(batch) == len(body), batch.index
