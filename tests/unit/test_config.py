from datetime import UTC, datetime

import pytest

from hopper.config import ASYNC_PAYLOAD_LIMIT, SYNC_PAYLOAD_LIMIT, RunConfig, parse_size
from hopper.errors import InvalidInput


def test_defaults_follow_the_seed() -> None:
    config = RunConfig(source="s3://bucket")
    assert config.batch_size == 1
    assert config.mode == "objects"
    assert config.invocation_type == "event"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512", 512),
        ("10KB", 10_000),
        ("10k", 10_000),
        ("2MiB", 2 * 1024**2),
        ("1.5 GB", 1_500_000_000),
    ],
)
def test_sizes(text: str, expected: int) -> None:
    assert parse_size(text, flag="--min-size") == expected


@pytest.mark.parametrize("text", ["ten", "10XB", "", "1e3"])
def test_unreadable_sizes(text: str) -> None:
    with pytest.raises(InvalidInput, match="--min-size"):
        parse_size(text, flag="--min-size")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": "0"}, "--batch-size must be greater than 0"),
        ({"batch_size": "-3"}, "--batch-size must be greater than 0"),
        ({"concurrency": "0"}, "--concurrency must be greater than 0"),
        ({"limit": "-1"}, "--limit must be greater than 0"),
        ({"min_size": "0"}, "--min-size must be greater than 0"),
        ({"max_size": "-5KB"}, "--max-size must be greater than 0"),
        ({"deadline": "0"}, "--deadline must be greater than 0"),
        ({"timeout": "-1"}, "--timeout must be greater than 0"),
        ({"batch_size": "two"}, "--batch-size must be a whole number"),
        ({"mode": "files"}, "unknown mode 'files'"),
        ({"invocation_type": "dryrun"}, "unknown invocation type 'dryrun'"),
        ({"modified_after": "yesterday"}, "cannot read 'yesterday' as an ISO 8601"),
        ({"min_size": "2MB", "max_size": "1MB"}, "--min-size 2000000 is larger than --max-size"),
        ({"payload": "{not json"}, "--payload is not valid JSON"),
        ({"payload": "[1, 2]"}, "--payload must be a JSON object, got list"),
        ({"payload": '"text"'}, "--payload must be a JSON object, got str"),
        ({"payload": '{"items": 1}'}, "payload may not set items"),
        ({"mode": "prefixes", "min_size": "1"}, "cannot be used with --mode prefixes"),
        ({"deadline": "nan"}, "--deadline must be a finite number"),
        (
            {"modified_after": "2024-02-01", "modified_before": "2024-01-01"},
            "--modified-after must be earlier",
        ),
        ({"bogus": 1}, "unknown run option"),
    ],
)
def test_bad_input_is_named(options: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        RunConfig.from_mapping({"source": "s3://bucket", **options})
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_dates_without_zone_are_utc() -> None:
    config = RunConfig.from_mapping({"source": "x", "modified_after": "2024-01-31"})
    assert config.modified_after == datetime(2024, 1, 31, tzinfo=UTC)
    zoned = RunConfig.from_mapping({"source": "x", "modified_before": "2024-01-31T12:00:00Z"})
    assert zoned.modified_before == datetime(2024, 1, 31, 12, tzinfo=UTC)


def test_payload_limit_depends_on_invocation() -> None:
    assert RunConfig(source="s", target="fn").payload_limit == ASYNC_PAYLOAD_LIMIT
    sync = RunConfig(source="s", target="fn", invocation_type="request-response")
    assert sync.payload_limit == SYNC_PAYLOAD_LIMIT
    assert RunConfig(source="s", target="w.py:handler").payload_limit == SYNC_PAYLOAD_LIMIT


def test_concurrency_default_depends_on_target() -> None:
    assert RunConfig(source="s", target="fn").effective_concurrency() == 16
    local = RunConfig(source="s", target="w.py:handler").effective_concurrency()
    assert 1 <= local <= 16
    assert RunConfig(source="s", target="fn", concurrency=3).effective_concurrency() == 3


def test_missing_source() -> None:
    with pytest.raises(InvalidInput, match="missing source"):
        RunConfig.from_mapping({"target": "fn"})
