"""S3 Inventory reports as a source, on moto's S3, with reports the tests write in the
documented formats (tests/functional/inventory_reports.py)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hopper import RunConfig, plan, run
from hopper.cli import cli
from hopper.inventory import InventorySource, sort_rows

from .conftest import Received
from .inventory_reports import Row, write_report

AWKWARD = [
    "plain.csv",
    "with space/a b.csv",
    "plus+sign/x+y.csv",
    "percent%2Fliteral/%41.csv",
    "unicode/é/ü/日本.csv",
    "amp&eq=/q?#.csv",
    "dots/../up.csv",
    "tab\tand\nnewline/x.csv",
    "emoji/🙂.csv",
    "zz/last.csv",
]


@pytest.fixture
def dest(moto_session: Any) -> Any:
    s3 = moto_session.client("s3")
    for name in ("inventory-dest", "source-bucket"):
        s3.create_bucket(Bucket=name)
    return s3


def keys_of(source: InventorySource, start_after: str | None = None) -> list[str]:
    return [item.key for page in source.pages(start_after) for item in page.items]


def test_awkward_keys_across_files_come_out_decoded_and_in_utf8_order(
    dest: Any, moto_session: Any
) -> None:
    url = write_report(dest, [Row(k, size=i) for i, k in enumerate(AWKWARD)], files=3)
    source = InventorySource(f"inventory:{url}", session=moto_session)
    keys = keys_of(source)
    assert keys == sorted(AWKWARD, key=lambda k: k.encode("utf-8"))
    assert source.bucket == "source-bucket" and source.key_root == "s3://source-bucket/"
    [first] = [i for p in source.pages() for i in p.items if i.key == "plain.csv"]
    assert (first.size, first.etag) == (0, "d41d8cd98f00b204e9800998ecf8427e")
    assert first.last_modified is not None and first.last_modified.isoformat() == (
        "2026-11-28T10:00:00+00:00"
    )
    # A cursor means what it means for a listing: strictly after that key.
    assert keys_of(source, keys[3]) == keys[4:]


def test_the_sort_spills_to_disk_and_merges_in_key_order(monkeypatch: pytest.MonkeyPatch) -> None:
    import hopper.inventory as inventory

    monkeypatch.setattr(inventory, "SPILL_BLOCK", 2)
    rows = [(f"k{(i * 7919) % 1000:04d}", i, None, None, None) for i in range(1000)]
    out = list(sort_rows(iter(rows), run=64))  # 16 spilled runs, blocks of 2 rows
    assert [r[0] for r in out] == sorted(r[0] for r in rows)
    assert Counter(out) == Counter(rows)


def test_delete_markers_and_older_versions_are_skipped_and_counted(
    dest: Any, moto_session: Any
) -> None:
    rows = [
        Row("a/current.csv", version="v2"),
        Row("a/current.csv", latest=False, version="v1", etag="0" * 32),
        Row("b/deleted.csv", delete_marker=True, version="v3"),
        Row("b/deleted.csv", latest=False, version="v2"),
        Row("c/only.csv"),
    ]
    url = write_report(dest, rows)
    summary = plan(RunConfig(source=f"inventory:{url}"), session=moto_session)
    assert (summary.listed, summary.skipped, summary.selected) == (2, 3, 2)
    assert summary.first_keys == ["a/current.csv", "c/only.csv"]
    assert summary.inventory is not None
    assert (summary.inventory["rows"], summary.inventory["skipped_rows"]) == (5, 3)
    # Prefixes mode: the datasets that still hold a current object.
    datasets = plan(RunConfig(source=f"inventory:{url}", mode="prefixes"), session=moto_session)
    assert datasets.first_keys == ["a/", "c/"]


def test_a_key_prefix_narrows_the_report_as_it_narrows_a_listing(
    dest: Any, moto_session: Any
) -> None:
    rows = [Row(k) for k in ("data/x/1.csv", "data/x/2.csv", "data/y/1.csv", "data/top.csv",
                             "database/z/1.csv", "other/w/1.csv")]  # fmt: skip
    url = write_report(dest, rows)
    objects = InventorySource(f"inventory:{url}?prefix=data/", session=moto_session)
    assert keys_of(objects) == ["data/top.csv", "data/x/1.csv", "data/x/2.csv", "data/y/1.csv"]
    datasets = InventorySource(
        f"inventory:{url}?prefix=data", mode="prefixes", session=moto_session
    )
    assert keys_of(datasets) == ["data/x/", "data/y/"]
    assert keys_of(datasets, "data/x/") == ["data/y/"]
    assert datasets.describe().endswith("manifest.json?prefix=data/")


def test_run_dispatches_every_current_object_of_the_source_bucket(
    dest: Any, moto_session: Any, function: str, received: Received
) -> None:
    rows = [Row(k) for k in AWKWARD] + [Row("gone.csv", delete_marker=True)]
    url = write_report(dest, rows, files=4)
    summary = run(
        RunConfig(source=f"inventory:{url}", target=function, batch_size=3, transport="boto3"),
        session=moto_session,
    )
    assert summary.status == "succeeded", summary.to_dict()
    assert Counter(received.keys()) == Counter(AWKWARD)
    assert {e["bucket"] for e in received.events} == {"source-bucket"}
    assert (summary.counts.dispatched, summary.counts.skipped) == (len(AWKWARD), 1)


def test_the_newest_complete_report_is_taken_and_an_exact_manifest_is_checked(
    dest: Any, moto_session: Any
) -> None:
    write_report(dest, [Row("old.csv")], when="2026-11-27T00-00Z")
    url = write_report(dest, [Row("new.csv")], when="2026-11-28T00-00Z")
    write_report(dest, [Row("unfinished.csv")], when="2026-11-29T00-00Z", complete=False)
    assert keys_of(InventorySource(f"inventory:{url}", session=moto_session)) == ["new.csv"]
    exact = f"inventory:{url}2026-11-27T00-00Z/manifest.json"
    assert keys_of(InventorySource(exact, session=moto_session)) == ["old.csv"]

    runner = CliRunner()
    unfinished = runner.invoke(
        cli, ["plan", f"inventory:{url}2026-11-29T00-00Z/manifest.json", "--json"]
    )
    assert unfinished.exit_code == 1
    assert unfinished.stderr.strip() == (
        f"hopper: error: inventory report {url.removesuffix('/')}/2026-11-29T00-00Z/ is "
        "incomplete: it has no manifest.checksum yet (S3 writes it last)"
    )
    nothing = runner.invoke(cli, ["plan", "inventory:s3://inventory-dest/reports/none/daily/"])
    assert nothing.exit_code == 1
    assert "no inventory report under s3://inventory-dest/reports/none/daily/" in nothing.stderr
    assert len(nothing.stderr.strip().splitlines()) == 1


def test_a_checksum_mismatch_fails_before_anything_is_dispatched(
    dest: Any, moto_session: Any, function: str, received: Received
) -> None:
    url = write_report(dest, [Row(f"k{i}.csv") for i in range(50)], files=2)
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    [data] = [
        o["Key"]
        for o in dest.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}data/")["Contents"]
        if o["Key"].endswith("-1.csv.gz")
    ]
    body = dest.get_object(Bucket=bucket, Key=data)["Body"].read()
    dest.put_object(Bucket=bucket, Key=data, Body=body[:-9] + bytes(9))  # a damaged trailer
    result = CliRunner().invoke(
        cli, ["run", f"inventory:{url}", "--target", function, "--transport", "boto3", "--json"]
    )
    assert result.exit_code == 1, result.output
    [line] = result.stderr.strip().splitlines()[-1:]
    assert f"inventory data file s3://{bucket}/{data} does not match the MD5" in line
    assert "nothing was dispatched" in line
    assert received.events == []


def test_plan_shows_the_report_its_age_rows_and_what_listing_would_cost(
    dest: Any, moto_session: Any
) -> None:
    url = write_report(dest, [Row(f"d{i % 3}/k{i}.csv") for i in range(2500)], files=3)
    result = CliRunner().invoke(cli, ["plan", f"inventory:{url}", "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)["inventory"]
    assert facts["report"] == f"{url}2026-11-29T00-00Z/manifest.json"
    assert (facts["format"], facts["files"], facts["rows"]) == ("CSV", 3, 2500)
    assert facts["created"] == "2026-11-29T00:00:00Z" and facts["age_hours"] > 0
    assert facts["listing_instead_requests"] == 3
    assert facts["listing_instead_usd"] == pytest.approx(3 * 0.005 / 1000)
    text = CliRunner().invoke(cli, ["plan", f"inventory:{url}"]).stdout
    assert "2026-11-29T00:00:00Z, " in text and "hours old" in text
    assert "2500: 2500 current, 0 skipped (delete markers and older versions)" in text
    assert "3 LIST requests" in text


def test_incremental_runs_over_reports_send_only_what_changed(
    dest: Any, moto_session: Any, tmp_path: Path, function: str, received: Received
) -> None:
    keys = [f"k{i:02d}.csv" for i in range(20)]
    url = write_report(dest, [Row(k) for k in keys], when="2026-11-28T00-00Z")
    config = RunConfig(
        source=f"inventory:{url}",
        target=function,
        state=str(tmp_path / "state"),
        incremental=True,
        transport="boto3",
        invocation_type="request-response",
    )
    first = run(config, session=moto_session)
    assert first.counts.dispatched == 20
    changed = [Row(k, etag="f" * 32) if k == "k07.csv" else Row(k) for k in keys]
    write_report(dest, [*changed, Row("k99.csv")], when="2026-11-29T00-00Z")
    before = len(received.events)
    second = run(config, session=moto_session)
    sent = [item["key"] for event in received.events[before:] for item in event["items"]]
    assert sorted(sent) == ["k07.csv", "k99.csv"]
    assert (second.counts.dispatched, second.counts.unchanged) == (2, 19)


@pytest.mark.parametrize("fmt", ["Parquet", "ORC"])
def test_parquet_and_orc_reports_read_the_same(dest: Any, moto_session: Any, fmt: str) -> None:
    pytest.importorskip("pyarrow")
    rows = [Row(k) for k in AWKWARD] + [Row("x/old.csv", latest=False)]
    url = write_report(dest, rows, fmt=fmt, files=2)
    source = InventorySource(f"inventory:{url}", session=moto_session)
    assert keys_of(source) == sorted(AWKWARD)
    [item] = [i for p in source.pages() for i in p.items if i.key == "plain.csv"]
    assert item.last_modified is not None and item.last_modified.isoformat() == (
        "2026-11-28T10:00:00+00:00"
    )


def test_parquet_without_pyarrow_says_what_to_install(
    dest: Any, moto_session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("pyarrow")
    url = write_report(dest, [Row("a.csv")], fmt="Parquet", files=1)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    result = CliRunner().invoke(cli, ["plan", f"inventory:{url}"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "hopper: error: this inventory report is Parquet or ORC, which needs pyarrow: "
        "pip install 'hopper[inventory]'"
    )


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("inventory:reports/x/", "use inventory:s3://DEST_BUCKET/PREFIX/SOURCE_BUCKET/CONFIG_ID/"),
        ("inventory:s3://dest", "names no report"),
        ("inventory:s3://Bad_Bucket/x/", "not a valid S3 bucket name"),
        ("inventory:s3://dest/r/src/cfg/?keys=data/", "only prefix=KEY_PREFIX may follow"),
    ],
)
def test_bad_inventory_urls_are_bad_input(text: str, says: str) -> None:
    result = CliRunner().invoke(cli, ["plan", text])
    assert result.exit_code == 2 and says in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_deployed_handler_reads_the_newest_report_when_the_rule_starts_it(
    dest: Any, moto_session: Any, function: str, received: Received, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hopper.handler import handler

    from .test_handler import Context

    url = write_report(dest, [Row("a/1.csv"), Row("b/2.csv"), Row("gone.csv", delete_marker=True)])
    monkeypatch.setenv("HOPPER_SOURCE", f"inventory:{url}")
    monkeypatch.setenv("HOPPER_TARGET", function)
    # The stack's rule passes "{}" (its Input), so the run takes the stack's settings.
    result = handler({}, Context(60))
    assert result["status"] == "succeeded", result
    assert sorted(received.keys(function)) == ["a/1.csv", "b/2.csv"]
    assert {e["bucket"] for e in received.to(function)} == {"source-bucket"}


def test_selection_and_the_cursor_work_as_for_a_listing(
    dest: Any, moto_session: Any, tmp_path: Path, function: str, received: Received
) -> None:
    """--include and --limit select from the report, and --start-after resumes it: the two
    runs together send every selected key once."""
    keys = [f"logs/{i:03d}.json" for i in range(30)] + [f"tmp/{i}.bin" for i in range(5)]
    url = write_report(dest, [Row(k) for k in keys], files=3)
    state = str(tmp_path / "state")
    first = run(
        RunConfig(
            source=f"inventory:{url}", target=function, include=("logs/*",), limit=12,
            state=state, transport="boto3", invocation_type="request-response",
        ),
        session=moto_session,
    )  # fmt: skip
    assert first.status == "succeeded" and first.counts.dispatched == 12
    assert sorted(received.keys(function)) == [f"logs/{i:03d}.json" for i in range(12)]
    # --start-after means what it means for a listing: strictly after that key.
    later = run(
        RunConfig(
            source=f"inventory:{url}", target=function, include=("logs/*",),
            start_after="logs/011.json", transport="boto3",
            invocation_type="request-response",
        ),
        session=moto_session,
    )  # fmt: skip
    assert later.counts.dispatched == 18
    assert Counter(received.keys(function)) == Counter(k for k in keys if k.startswith("logs/"))


def test_retry_sends_only_what_its_worker_failed(
    dest: Any, moto_session: Any, tmp_path: Path
) -> None:
    keys = [f"k{i:02d}.csv" for i in range(10)]
    url = write_report(dest, [Row(k) for k in keys], files=2)
    seen, gate = tmp_path / "seen", tmp_path / "fixed"
    seen.mkdir()
    worker = tmp_path / "picky.py"
    worker.write_text(
        "import pathlib\n"
        "def handler(event, context):\n"
        "    key = event['items'][0]['key']\n"
        f"    pathlib.Path({str(seen)!r}, key).touch()\n"
        f"    if key in ('k03.csv', 'k07.csv') and not pathlib.Path({str(gate)!r}).exists():\n"
        "        raise ValueError('cannot read ' + key)\n"
        "    return {'ok': key}\n"
    )
    state = str(tmp_path / "state")
    runner = CliRunner()
    first = runner.invoke(
        cli, ["run", f"inventory:{url}", "--target", f"{worker}:handler", "--state", state,
              "--json"],
    )  # fmt: skip
    assert first.exit_code == 1, first.output
    summary = json.loads(first.stdout)
    assert (summary["processed"], summary["worker_failed"]) == (8, 2)
    for path in seen.iterdir():
        path.unlink()
    gate.touch()
    again = runner.invoke(cli, ["retry", summary["run_id"], "--state", state, "--json"])
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in seen.iterdir()) == ["k03.csv", "k07.csv"]


@pytest.mark.parametrize("target", ["local", "lambda"])
def test_ctrl_c_stops_the_reading_of_a_report_and_loses_nothing(
    dest: Any, moto_session: Any, function: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, target: str,
) -> None:  # fmt: skip
    """Reading and sorting a large report comes before the first item: Ctrl-C stops the read
    itself, and the run ends incomplete, nothing dispatched, its cursor where it began."""
    import threading

    import hopper.inventory as inventory

    url = write_report(dest, [Row(f"k{i:05d}") for i in range(30_000)], files=2)
    stop = threading.Event()
    read = inventory.read_rows

    def ctrl_c_midway(s3: Any, report: Any) -> Any:
        for n, row in enumerate(read(s3, report)):
            if n == 10_000:
                stop.set()
            yield row

    monkeypatch.setattr(inventory, "read_rows", ctrl_c_midway)
    worker = tmp_path / "w.py"
    worker.write_text("def handler(event, context):\n    return 1\n")
    chosen = f"{worker}:handler" if target == "local" else function
    summary = run(
        RunConfig(source=f"inventory:{url}", target=chosen, transport="boto3"),
        session=moto_session,
        stop=stop,
    )
    assert summary.status == "incomplete" and summary.stop is not None
    assert summary.stop.reason.value == "interrupted"
    assert (summary.counts.listed, summary.counts.dispatched) == (0, 0)
    assert summary.listing_complete is False and summary.error is None
