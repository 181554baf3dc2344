"""Local mode: a folder as the source and a Python file as the worker, no AWS at all."""

from __future__ import annotations

import os
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from hopper import RunConfig, run
from hopper.errors import WorkerLoadError
from hopper.sources import LocalSource

from ..hooks import OnOutcome

NAMES = [
    "a.txt",
    "a/b.txt",
    "a-c.txt",
    "B.txt",
    "é.txt",
    "with space/f 1.csv",
    "plus+pct%&=#.txt",
    "deep/er/est/leaf.bin",
    "z/ü/文件.txt",
]

MARKER_WORKER = textwrap.dedent(
    """
    import hashlib, os

    def handler(event, context):
        out = event["marker_dir"]
        for item in event["items"]:
            name = hashlib.sha256(item["key"].encode()).hexdigest()
            # "x" fails on a second delivery of the same key: duplicates cannot hide.
            with open(os.path.join(out, name), "x", encoding="utf-8") as marker:
                marker.write(item["key"])
            with open(item["path"], "rb") as data:
                data.read()
        return {"keys": [i["key"] for i in event["items"]]}
    """
)


def make_tree(root: Path, names: list[str]) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())


def write_worker(tmp_path: Path, source: str, name: str = "worker.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return str(path)


def markers(out: Path) -> Counter[str]:
    return Counter(p.read_text(encoding="utf-8") for p in out.iterdir())


def test_keys_are_relative_posix_paths_in_utf8_byte_order(tmp_path: Path) -> None:
    make_tree(tmp_path, NAMES)
    keys = [i.key for page in LocalSource(tmp_path).pages() for i in page.items]
    assert keys == sorted(NAMES, key=lambda k: k.encode("utf-8"))
    prefixes = [
        i.key for page in LocalSource(tmp_path, mode="prefixes").pages() for i in page.items
    ]
    assert prefixes == ["a/", "deep/", "with space/", "z/"]
    after = [i.key for page in LocalSource(tmp_path).pages("a/b.txt") for i in page.items]
    assert after == keys[keys.index("a/b.txt") + 1 :]
    after_prefix = [
        i.key for page in LocalSource(tmp_path, mode="prefixes").pages("deep/") for i in page.items
    ]
    assert after_prefix == ["with space/", "z/"]


def test_every_file_is_processed_exactly_once(tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    out.mkdir()
    names = NAMES + [f"bulk/{i:04}.dat" for i in range(1200)]
    make_tree(data, names)
    worker = write_worker(tmp_path, MARKER_WORKER)
    summary = run(
        RunConfig(
            source=str(data),
            target=f"{worker}:handler",
            batch_size=7,
            concurrency=2,
            payload={"marker_dir": str(out)},
        )
    )
    assert summary.status == "succeeded", summary.failures
    assert markers(out) == Counter(names)
    assert summary.counts.listed == summary.counts.dispatched == len(names)
    assert summary.results[0]["result"]["keys"][:5] == summary.results[0]["keys"]


def test_links_out_of_the_folder_are_skipped_and_reported(tmp_path: Path) -> None:
    data, outside, out = tmp_path / "data", tmp_path / "outside", tmp_path / "out"
    out.mkdir()
    make_tree(data, ["inside.txt", "sub/real.txt"])
    make_tree(outside, ["secret.txt", "dir/secret2.txt"])
    os.symlink(outside / "secret.txt", data / "leak.txt")
    os.symlink(outside / "dir", data / "leakdir")
    os.symlink(data / "inside.txt", data / "alias.txt")
    os.symlink(data / "sub", data / "sub" / "loop")
    os.symlink(data / "missing", data / "broken.txt")
    worker = write_worker(tmp_path, MARKER_WORKER)
    summary = run(
        RunConfig(source=str(data), target=f"{worker}:handler", payload={"marker_dir": str(out)})
    )
    assert markers(out) == Counter(["alias.txt", "inside.txt", "sub/real.txt"])
    reasons = {s["key"]: s["reason"] for s in summary.skipped}
    assert reasons == {
        "leak.txt": "symbolic link leads outside the folder",
        "leakdir": "symbolic link leads outside the folder",
        "sub/loop/": "symbolic link loop",
        "broken.txt": "broken symbolic link",
    }
    assert summary.counts.skipped == 4


def test_worker_gets_a_lambda_like_context(tmp_path: Path) -> None:
    make_tree(tmp_path / "data", ["one.txt"])
    worker = write_worker(
        tmp_path,
        """
        def handler(event, context):
            return {
                "function_name": context.function_name,
                "request_id": context.aws_request_id,
                "memory": context.memory_limit_in_mb,
                "remaining": context.get_remaining_time_in_millis(),
                "dataset_prefix": event["dataset_prefix"],
                "bucket" in event: True,
                "pid": __import__("os").getpid(),
            }
        """,
    )
    summary = run(
        RunConfig(source=str(tmp_path / "data"), target=f"{worker}:handler", timeout=7, memory=512)
    )
    result = summary.results[0]["result"]
    assert result["function_name"] == "worker-handler"
    assert len(result["request_id"]) == 36
    assert result["memory"] == 512
    assert 0 < result["remaining"] <= 7000
    assert result["dataset_prefix"] == "one.txt"
    assert result["false"] is True  # no "bucket" for a local source
    assert result["pid"] != os.getpid()


def test_a_raising_worker_fails_its_batch_with_type_and_message(tmp_path: Path) -> None:
    make_tree(tmp_path / "data", ["good.txt", "bad.txt", "also-good.txt"])
    worker = write_worker(
        tmp_path,
        """
        def handler(event, context):
            if event["dataset_prefix"] == "bad.txt":
                raise ValueError("cannot parse bad.txt")
            return "ok"
        """,
    )
    summary = run(RunConfig(source=str(tmp_path / "data"), target=f"{worker}:handler"))
    assert summary.status == "failed" and summary.exit_code == 1
    # The call went out, and the worker raised: a worker failure, not a failed dispatch.
    assert summary.counts.dispatched == 3 and summary.counts.failed == 0
    assert summary.counts.processed == 2 and summary.counts.worker_failed == 1
    assert summary.failures[0]["status"] == "worker_failed"
    assert summary.failures[0]["keys"] == ["bad.txt"]
    assert summary.failures[0]["error_type"] == "ValueError"
    assert summary.failures[0]["error"] == "cannot parse bad.txt"


def test_the_timeout_is_enforced_per_invocation(tmp_path: Path) -> None:
    make_tree(tmp_path / "data", ["slow.txt", "fast-1.txt", "fast-2.txt", "fast-3.txt"])
    worker = write_worker(
        tmp_path,
        """
        import time

        def handler(event, context):
            if event["dataset_prefix"] == "slow.txt":
                time.sleep(60)
            return context.get_remaining_time_in_millis()
        """,
    )
    summary = run(
        RunConfig(
            source=str(tmp_path / "data"), target=f"{worker}:handler", timeout=1, concurrency=1
        )
    )
    assert summary.duration_s < 30
    assert summary.counts.worker_failed == 1 and summary.counts.processed == 3
    assert summary.counts.failed == 0 and summary.counts.dispatched == 4
    failure = summary.failures[0]
    assert failure["keys"] == ["slow.txt"] and failure["status"] == "worker_failed"
    assert failure["error_type"] == "Timeout"
    assert "timed out after 1 seconds" in failure["error"]


def test_a_worker_that_kills_its_process_fails_only_its_batch(tmp_path: Path) -> None:
    make_tree(tmp_path / "data", ["a.txt", "crash.txt", "c.txt"])
    worker = write_worker(
        tmp_path,
        """
        import os

        def handler(event, context):
            if event["dataset_prefix"] == "crash.txt":
                os._exit(3)
            return 1
        """,
    )
    summary = run(
        RunConfig(source=str(tmp_path / "data"), target=f"{worker}:handler", concurrency=1)
    )
    assert summary.counts.processed == 2 and summary.counts.worker_failed == 1
    assert summary.failures[0]["error"] == "worker process exited (exit code 3)"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def handler(event, context)\n    return 1\n", "SyntaxError at line 1"),
        ("def other(event, context):\n    return 1\n", "the worker has no function 'handler'"),
        ("handler = 42\n", "'handler' is not a function"),
        ("import not_a_real_module_xyz\n", "ModuleNotFoundError"),
    ],
)
def test_a_worker_that_does_not_load_is_bad_input(
    tmp_path: Path, source: str, message: str
) -> None:
    make_tree(tmp_path / "data", ["x.txt"])
    worker = write_worker(tmp_path, source)
    with pytest.raises(WorkerLoadError) as caught:
        run(RunConfig(source=str(tmp_path / "data"), target=f"{worker}:handler"))
    assert message in str(caught.value)
    assert caught.value.exit_code == 2


def test_module_targets_import_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tree(tmp_path / "data", ["x.txt"])
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "jobs.py").write_text(
        "def run(event, context):\n    return event['dataset_prefix'].upper()\n"
    )
    monkeypatch.chdir(tmp_path)
    summary = run(RunConfig(source="data", target="python:mypkg.jobs:run"))
    assert summary.results[0]["result"] == "X.TXT"


@pytest.mark.slow
def test_deadline_reports_the_rest_and_a_cursor_that_resumes_without_loss(tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    out.mkdir()
    names = [f"f{i:03}.txt" for i in range(40)]
    make_tree(data, names)
    worker = write_worker(
        tmp_path,
        MARKER_WORKER.replace(
            "def handler(event, context):",
            "def handler(event, context):\n    __import__('time').sleep(0.1)",
        ),
    )
    config = dict(
        source=str(data),
        target=f"{worker}:handler",
        concurrency=2,
        payload={"marker_dir": str(out)},
    )
    first = run(RunConfig(**config, deadline=0.8))  # type: ignore[arg-type]
    assert first.status == "incomplete" and first.exit_code == 1
    assert first.counts.not_dispatched + first.counts.dispatched == first.counts.selected
    assert first.cursor is not None and not first.listing_complete
    second = run(RunConfig(**config, start_after=first.cursor))  # type: ignore[arg-type]
    assert second.status == "succeeded"
    # Every file was processed exactly once across the two runs (markers are exclusive).
    assert markers(out) == Counter(names)


def test_worker_prints_never_reach_stdout(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    make_tree(tmp_path / "data", ["x.txt"])
    worker = write_worker(
        tmp_path, "def handler(event, context):\n    print('noise from the worker')\n    return 1\n"
    )
    run(RunConfig(source=str(tmp_path / "data"), target=f"{worker}:handler"))
    captured = capfd.readouterr()
    assert "noise from the worker" not in captured.out
    assert "noise from the worker" in captured.err


def test_events_built_by_the_worker_process_are_those_lambda_would_get(tmp_path: Path) -> None:
    """Short tasks go to a worker process in chunks, as task rows it turns into events with
    hopper.event's own code: each must equal the decoded event a Lambda function would get,
    with a payload of its own (the worker below mutates it)."""
    import json

    from hopper.event import encode_event
    from hopper.local import LocalTarget
    from hopper.targets import parse_target

    make_tree(tmp_path / "data", [f"d{i % 3}/f-{i:04}.txt" for i in range(400)])
    worker = write_worker(
        tmp_path,
        """
        def handler(event, context):
            event["cfg"]["seen"] += 1
            return event
        """,
    )
    payload = {"cfg": {"seen": 0, "nested": [1, {"a": "é"}]}}
    target = parse_target(f"{worker}:handler", concurrency=2)
    assert isinstance(target, LocalTarget)
    got: list[tuple[object, object]] = []
    summary = run(
        RunConfig(source=str(tmp_path / "data"), target=f"{worker}:handler", payload=payload),
        target=target,
        hooks=OnOutcome(lambda o: got.append((o.batch, o.result))),
    )
    assert summary.status == "succeeded" and summary.counts.dispatched == 400
    # The run went out in chunks, not one invocation per round trip.
    assert target.chunk_size() > 1
    for batch, result in got:
        expected = json.loads(
            encode_event(
                batch=batch,  # type: ignore[arg-type]
                run_id=summary.run_id,
                attempt=1,
                payload=payload,
                bucket=None,
            )
        )
        expected["cfg"]["seen"] = 1
        assert result == expected
