"""Run state on both a local folder and S3 (moto over HTTP): lease, ledger, resume, retry."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hopper import RunConfig
from hopper.errors import LeaseHeld
from hopper.runstate.lease import Lease
from hopper.runstate.record import list_runs, report
from hopper.runstate.run import run_with_state
from hopper.runstate.store import open_store

from ..hooks import OnProgress

WORKER = textwrap.dedent(
    """
    import hashlib, os, time

    def handler(event, context):
        out = event["out"]
        fail = set(open(event["fail"]).read().split()) if os.path.exists(event["fail"]) else set()
        slow = set(open(event["slow"]).read().split()) if os.path.exists(event["slow"]) else set()
        time.sleep(float(event.get("sleep", 0)))
        if any(item["key"] in slow for item in event["items"]):
            time.sleep(60)
        for item in event["items"]:
            if item["key"] in fail:
                raise ValueError("cannot process " + item["key"])
        for item in event["items"]:
            name = hashlib.sha256(item["key"].encode()).hexdigest() + "." + context.aws_request_id
            with open(os.path.join(out, name), "w") as marker:
                marker.write(item["key"])
        return len(event["items"])
    """
)


class World:
    """A folder of data, a worker that leaves a marker per item and invocation, a state location."""

    def __init__(self, tmp: Path, state: str, env: dict[str, str]) -> None:
        self.data = tmp / "data"
        self.out = tmp / "out"
        self.fail = tmp / "fail.txt"
        self.slow = tmp / "slow.txt"
        self.worker = tmp / "worker.py"
        self.state = state
        self.env = env
        self.data.mkdir()
        self.out.mkdir()
        self.worker.write_text(WORKER)

    def files(self, names: list[str]) -> None:
        for name in names:
            path = self.data / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(name)

    def failing(self, *keys: str) -> None:
        self.fail.write_text("\n".join(keys))

    def payload(self, sleep: float = 0.0) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "fail": str(self.fail),
            "slow": str(self.slow),
            "sleep": sleep,
        }

    def config(self, sleep: float = 0.0, **kw: Any) -> RunConfig:
        values: dict[str, Any] = {
            "source": str(self.data),
            "target": f"{self.worker}:handler",
            "state": self.state,
            "payload": self.payload(sleep),
            "concurrency": 2,
        }
        values.update(kw)
        return RunConfig(**values)

    def markers(self) -> Counter[str]:
        return Counter(p.read_text() for p in self.out.iterdir())

    def clear_markers(self) -> None:
        for path in self.out.iterdir():
            path.unlink()

    def command(self, sleep: float = 0.0, *extra: str) -> list[str]:
        return [
            sys.executable, "-m", "hopper", "run", str(self.data), "--target", f"{self.worker}:handler",
            "--state", self.state, "--payload", json.dumps(self.payload(sleep)), "--concurrency", "2", *extra,
        ]  # fmt: skip


@pytest.fixture(params=["local", "s3"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["HOPPER_LEASE_TTL"] = "3"
    if request.param == "local":
        yield World(tmp_path, str(tmp_path / "state"), env)
        return
    session = request.getfixturevalue("server_session")
    session.client("s3").create_bucket(Bucket="state-bucket")
    env.update(
        AWS_ENDPOINT_URL=os.environ["AWS_ENDPOINT_URL"], AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
    )  # fmt: skip
    yield World(tmp_path, "s3://state-bucket/jobs/nightly", env)


def test_report_and_runs(world: World) -> None:
    world.files([f"f{i:02}.txt" for i in range(12)])
    world.failing("f03.txt", "f07.txt")
    summary = run_with_state(world.config())
    assert summary.status == "failed"
    store = open_store(world.state)
    [listed] = list_runs(store)
    assert listed["run_id"] == summary.run_id and listed["status"] == "failed"
    assert (listed["dispatched"], listed["failed"]) == (12, 0)
    assert (listed["processed"], listed["worker_failed"]) == (10, 2)
    document = report(store, summary.run_id)
    assert document["ledger"]["items"] == {
        "dispatched": 12, "failed": 0, "not_dispatched": 0,
        "processed": 10, "worker_failed": 2, "pending": 0, "lost": 0,
    }  # fmt: skip
    assert (document["dispatched"], document["failed"], document["not_dispatched"]) == (12, 0, 0)
    assert (document["processed"], document["worker_failed"]) == (10, 2)
    assert {f["status"] for f in document["failures"]} == {"worker_failed"}
    assert sorted(f["keys"][0] for f in document["failures"]) == ["f03.txt", "f07.txt"]
    assert {f["error"] for f in document["failures"]} == {
        "cannot process f03.txt",
        "cannot process f07.txt",
    }
    assert all(f["error_type"] == "ValueError" and f["attempts"] == 1 for f in document["failures"])
    assert document["cursor"] == "f11.txt"
    assert document["target"] == f"{world.worker}:handler"


def test_retry_dispatches_only_what_failed(world: World) -> None:
    names = [f"f{i:02}.txt" for i in range(12)]
    world.files(names)
    world.failing("f03.txt", "f07.txt", "f10.txt")
    first = run_with_state(world.config())
    assert first.counts.worker_failed == 3
    world.clear_markers()
    world.failing()
    second = run_with_state(world.config(), retry_of=first.run_id)
    assert second.status == "succeeded"
    assert world.markers() == Counter(["f03.txt", "f07.txt", "f10.txt"])
    store = open_store(world.state)
    assert report(store, second.run_id)["retry_of"] == first.run_id
    assert [r["run_id"] for r in list_runs(store)] == [second.run_id, first.run_id]


@pytest.mark.parametrize(("threshold", "failing"), [("3", 20), ("25%", 10)])
def test_failure_threshold_stops_the_run(world: World, threshold: str, failing: int) -> None:
    names = [f"f{i:02}.txt" for i in range(40)]
    world.files(names)
    world.failing(*random.Random(1).sample(names, failing) if failing < 40 else names)
    if threshold == "3":
        world.failing(*names)
    summary = run_with_state(world.config(max_failures=threshold))
    assert summary.status == "failed" and summary.exit_code == 1
    assert summary.stopped is not None and summary.stopped.startswith("failure threshold crossed")
    assert summary.counts.not_dispatched > 0
    events = report(open_store(world.state), summary.run_id)["events"]
    assert [e["reason"] for e in events if e["event"] == "stopped"] == [summary.stopped]


def test_incremental_sends_only_new_and_changed(world: World) -> None:
    world.files(["a.txt", "b.txt", "c.txt", "d/e.txt"])
    config = world.config(incremental=True)
    first = run_with_state(config)
    assert first.counts.dispatched == 4 and world.markers() == Counter(
        ["a.txt", "b.txt", "c.txt", "d/e.txt"]
    )
    world.clear_markers()
    second = run_with_state(config)
    assert second.status == "succeeded"
    assert second.counts.dispatched == 0 and second.counts.unchanged == 4
    assert world.markers() == Counter()
    (world.data / "b.txt").write_text("changed, and longer than before")
    (world.data / "c.txt").unlink()
    world.files(["aa.txt", "z.txt"])
    third = run_with_state(config)
    assert world.markers() == Counter(["aa.txt", "b.txt", "z.txt"])
    assert third.counts.unchanged == 2
    store = open_store(world.state)
    [job] = list(store.keys("incremental/"))
    lines = [json.loads(line) for line in store.lines(job)]
    assert [entry["k"] for entry in lines] == ["a.txt", "aa.txt", "b.txt", "d/e.txt", "z.txt"]
    world.clear_markers()
    # An item whose worker failed is sent again next time, even though it did not change.
    (world.data / "a.txt").write_text("a changed")
    world.failing("a.txt")
    run_with_state(config)
    world.failing()
    fifth = run_with_state(config)
    assert world.markers() == Counter(["a.txt"]) and fifth.counts.dispatched == 1


def test_incremental_datasets_are_sent_again_when_anything_inside_changes(world: World) -> None:
    world.files(["a/1.txt", "a/2.txt", "b/1.txt", "c/1.txt", "c/deep/2.txt"])
    datasets = world.config(mode="prefixes", incremental=True)
    first = run_with_state(datasets)
    assert first.counts.dispatched == 3 and world.markers() == Counter(["a/", "b/", "c/"])
    world.clear_markers()
    assert run_with_state(datasets).counts.unchanged == 3
    # A change deep inside one dataset: exactly that dataset is sent again.
    (world.data / "c" / "deep" / "2.txt").write_text("changed, and longer than before")
    third = run_with_state(datasets)
    assert world.markers() == Counter(["c/"])
    assert (third.counts.dispatched, third.counts.unchanged) == (1, 2)
    world.clear_markers()
    (world.data / "b" / "new.txt").write_text("a new file")
    run_with_state(datasets)
    assert world.markers() == Counter(["b/"])


def test_objects_and_prefixes_jobs_keep_their_own_incremental_state(world: World) -> None:
    world.files(["a/1.txt", "b/1.txt"])
    objects = world.config(incremental=True)
    datasets = world.config(mode="prefixes", incremental=True)
    run_with_state(objects)
    run_with_state(datasets)
    world.clear_markers()
    # Neither job's run made the other send everything again.
    assert run_with_state(objects).counts.dispatched == 0
    assert run_with_state(datasets).counts.dispatched == 0
    assert world.markers() == Counter()
    assert len(list(open_store(world.state).keys("incremental/"))) == 2


@pytest.mark.slow
def test_five_runs_at_once_exactly_one_proceeds(world: World) -> None:
    world.files([f"f{i}.txt" for i in range(6)])
    processes = [
        subprocess.Popen(
            world.command(1.5),  # the winner holds the lease well past the others' start-up
            env=world.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(5)
    ]
    results = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in processes]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 3, 3, 3, 3], results
    for code, err in results:
        if code == 3:
            assert len(err.strip().splitlines()) == 1 and " is held by run " in err, err
    assert world.markers() == Counter(f"f{i}.txt" for i in range(6))


def test_wait_runs_after_the_holder(world: World) -> None:
    world.files(["x.txt"])
    store = open_store(world.state)
    holder = Lease(store, "someone-else", ttl=2)
    holder.acquire()
    with pytest.raises(LeaseHeld) as caught:
        run_with_state(world.config())
    assert "someone-else" in str(caught.value) and caught.value.exit_code == 3
    holder.release()
    assert run_with_state(world.config(), wait=True).status == "succeeded"


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume_loses_nothing(world: World) -> None:
    names = [f"k{i:03}.txt" for i in range(120)]
    world.files(names)
    rng = random.Random(7)
    for attempt in range(3):
        world.clear_markers()
        victim = subprocess.Popen(
            world.command(0.05), env=world.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        time.sleep(rng.uniform(1.0, 2.5))
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        before = world.markers()
        assert len(before) < len(names), "the kill came after the run had finished"
        resumed = subprocess.run(
            world.command(0.05, "--wait", "--json"),
            env=world.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert resumed.returncode == 0, resumed.stderr
        summary = json.loads(resumed.stdout)
        after = world.markers()
        assert set(after) == set(names), f"attempt {attempt}: lost {set(names) - set(after)}"
        # The resumed run took up the killed one and started after its checkpoint.
        assert summary["run_id"] in {r["run_id"] for r in list_runs(open_store(world.state))}
        duplicates = sum(after.values()) - len(names)
        assert duplicates <= 2 * 2 + 2, (attempt, duplicates, sum(before.values()))
        if before:
            assert summary["listed"] < len(names), "the resumed run listed everything again"


def test_state_inside_the_source_is_never_listed(tmp_path: Path) -> None:
    world = World(tmp_path, str(tmp_path / "data" / "state-here"), dict(os.environ))
    world.files(["a.txt", "b.txt"])
    first = run_with_state(world.config())
    second = run_with_state(world.config())
    assert first.counts.listed == second.counts.listed == 2
    assert (world.data / "state-here" / "runs").is_dir()


@pytest.mark.slow
def test_an_interrupted_run_checkpoints_and_the_next_resumes(world: World) -> None:
    import threading

    names = [f"f{i:03}.txt" for i in range(40)]
    world.files(names)
    stop = threading.Event()

    def ctrl_c_after_five(summary: Any) -> None:
        if summary.counts.dispatched >= 5:
            stop.set()

    first = run_with_state(world.config(sleep=0.05), stop=stop, hooks=OnProgress(ctrl_c_after_five))
    assert first.status == "incomplete" and first.stopped == "interrupted"
    assert first.cursor is not None and first.counts.not_dispatched > 0
    second = run_with_state(world.config(sleep=0.05))
    assert second.run_id == first.run_id
    assert second.counts.listed == len([n for n in names if n > first.cursor])
    assert set(world.markers()) == set(names)
    assert report(open_store(world.state), first.run_id)["status"] == "succeeded"


@pytest.mark.slow
def test_local_schedule_runs_on_ticks_skips_held_ones_and_stops_on_ctrl_c(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import threading
    from datetime import timedelta

    from click.testing import CliRunner

    from hopper.cli import cli

    world = World(tmp_path, str(tmp_path / "state"), dict(os.environ))
    world.files(["a.txt", "b.txt"])
    # A fast clock for the schedule: a tick every 0.6 s instead of every minute.
    monkeypatch.setattr(
        "hopper.schedule.next_fire_times",
        lambda schedule, after, count, zone=None: [after + timedelta(seconds=0.6)],
    )
    other = Lease(open_store(world.state), "someone-else", ttl=30)
    other.acquire()
    threading.Timer(1.0, other.release).start()
    threading.Timer(3.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    caplog.set_level("WARNING")
    args = world.command(0.0, "--schedule", "rate(1 minute)", "--json")[3:]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert any(
        "skipped the tick" in r.getMessage() and "someone-else" in r.getMessage()
        for r in caplog.records
    )
    finished = [r for r in list_runs(open_store(world.state)) if r["status"] == "succeeded"]
    assert len(finished) >= 2
    assert "stopping after the batches in flight" in result.stderr
    assert not (Path(world.state) / "lease.json").exists()


def test_a_run_that_cannot_start_is_recorded_as_failed(tmp_path: Path) -> None:
    from hopper.errors import WorkerLoadError
    from hopper.runstate.record import ACTIVE_KEY

    world = World(tmp_path, str(tmp_path / "state"), dict(os.environ))
    world.files(["a.txt"])
    world.worker.write_text("def handler(event, context)\n    pass\n")
    with pytest.raises(WorkerLoadError):
        run_with_state(world.config())
    store = open_store(world.state)
    [failed] = list_runs(store)
    assert failed["status"] == "failed" and "SyntaxError" in failed["error"]
    assert store.get(ACTIVE_KEY) is None
    assert store.get("lease.json") is None


def _interrupt_then_resume(world: World, names: list[str], ctrl_cs: int) -> dict[str, Any]:
    """The run starts in a session of its own, as a terminal's foreground job: a Ctrl-C there
    goes to every process of the group, hopper's worker processes included. Returns the
    interrupted run's report."""
    first = subprocess.Popen(
        world.command(0.2, "--json"),
        env=world.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    time.sleep(2.0)
    for _ in range(ctrl_cs):
        os.killpg(first.pid, signal.SIGINT)
        time.sleep(0.3)
    # Within seconds: a first Ctrl-C waits for the batches in flight (0.2 s each here); a
    # second one does not wait for a worker that would take a minute.
    stdout, stderr = first.communicate(timeout=20)
    assert first.returncode == 130, stderr
    assert "KeyboardInterrupt" not in stdout + stderr
    store = open_store(world.state)
    [interrupted] = list_runs(store)
    assert interrupted["status"] == "incomplete"
    done_before = set(world.markers())
    assert 0 < len(done_before) < len(names)
    # No worker failure: the calls in flight finished, or were cut short and count as not
    # dispatched.
    ledger = report(store, interrupted["run_id"])
    assert ledger["failed"] == 0
    assert all(f["status"] == "not_dispatched" for f in ledger["failures"]), ledger["failures"]
    # The same command again: the same job, so it resumes the interrupted run.
    world.slow.unlink(missing_ok=True)
    again = subprocess.run(
        world.command(0.2, "--json"),
        env=world.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    resumed = json.loads(again.stdout)
    assert resumed["run_id"] == interrupted["run_id"] and resumed["status"] == "succeeded"
    assert set(world.markers()) == set(names)
    return ledger


@pytest.mark.slow
def test_ctrl_c_in_a_terminal_lets_the_batches_in_flight_finish(tmp_path: Path) -> None:
    world = World(tmp_path, str(tmp_path / "state"), dict(os.environ))
    names = [f"f{i:03}.txt" for i in range(60)]
    world.files(names)
    _interrupt_then_resume(world, names, ctrl_cs=1)


@pytest.mark.slow
def test_a_second_ctrl_c_aborts_and_what_it_cut_short_is_sent_again(tmp_path: Path) -> None:
    world = World(tmp_path, str(tmp_path / "state"), dict(os.environ))
    names = [f"f{i:03}.txt" for i in range(60)]
    world.files(names)
    # Reached after about a second at two in flight, these take a minute each: only an
    # abort ends the run in time.
    slow = names[10:20]
    world.slow.write_text("\n".join(slow))
    ledger = _interrupt_then_resume(world, names, ctrl_cs=2)
    cut_short = {key for f in ledger["failures"] for key in f["keys"]}
    assert cut_short & set(slow), ledger["failures"]


def test_a_resumed_run_counts_the_failures_of_its_earlier_segments(world: World) -> None:
    import threading

    names = [f"f{i:03}.txt" for i in range(30)]
    world.files(names)
    world.failing("f001.txt")
    stop = threading.Event()

    def stop_after_five(summary: Any) -> None:
        if summary.counts.dispatched >= 5:
            stop.set()

    first = run_with_state(world.config(sleep=0.05), stop=stop, hooks=OnProgress(stop_after_five))
    assert first.stopped == "interrupted" and first.counts.worker_failed == 1
    world.failing()
    second = run_with_state(world.config(sleep=0.05))
    assert second.run_id == first.run_id and second.segments == 2
    # The second segment failed nothing, but the run did: its summary says so.
    assert second.status == "failed" and second.exit_code == 1
    assert (second.counts.worker_failed, second.counts.processed) == (1, 29)
    assert second.counts.dispatched == 30 and second.counts.not_dispatched == 0
    assert second.counts.dispatched_batches == 30  # one-item batches, all segments
    store = open_store(world.state)
    [listed] = list_runs(store)
    document = report(store, first.run_id)
    for view in (listed, document):
        assert (view["status"], view["worker_failed"], view["processed"]) == ("failed", 1, 29)
    assert [f["keys"] for f in second.failures] == [["f001.txt"]]
