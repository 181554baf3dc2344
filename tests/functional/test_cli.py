"""The CLI through Click's runner, plus real runs of the installed `hopper` script."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hopper.cli import cli

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
WORKER = f"{EXAMPLES / 'worker.py'}:handler"


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def test_run_json_is_one_document_on_stdout() -> None:
    result = invoke(
        "run", str(EXAMPLES / "datasets"), "--mode", "prefixes", "--target", WORKER, "--json"
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["status"] == "succeeded"
    assert doc["selected"] == doc["dispatched"] == 3
    assert doc["not_dispatched"] == 0 and doc["failed"] == 0
    datasets = {key for r in doc["results"] for key in r["result"]["datasets"]}
    assert datasets == {"inventory/", "sales-2024/", "weather-station-7/"}
    sales = next(
        r["result"]["datasets"]["sales-2024/"]
        for r in doc["results"]
        if r["keys"] == ["sales-2024/"]
    )
    assert sales == {
        "files": ["q1.csv", "q2.csv"],
        "rows": 7,
        "totals": {"units": 70.0, "revenue": 8400.49},
    }


def test_run_human_output_lists_results_and_counts() -> None:
    result = invoke("run", str(EXAMPLES / "datasets"), "--mode", "prefixes", "--target", WORKER)
    assert result.exit_code == 0
    # stdout holds the results, one line each; the summary goes to stderr only.
    assert len(result.stdout.splitlines()) == 3
    assert "weather-station-7/\t" in result.stdout
    assert "succeeded" in result.stderr and "succeeded" not in result.stdout
    assert "dispatched      3 items in 3 batches" in result.stderr


def test_plan_invokes_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "touched"
    worker = tmp_path / "w.py"
    worker.write_text(f"def handler(e, c):\n    open({str(marker)!r}, 'w').close()\n")
    result = invoke(
        "plan",
        str(EXAMPLES / "datasets"),
        "--target",
        f"{worker}:handler",
        "--batch-size",
        "4",
        "--json",
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["listed"], doc["selected"], doc["batches"]) == (6, 6, 2)
    assert (doc["min_batch_items"], doc["max_batch_items"], doc["mean_batch_items"]) == (2, 4, 3.0)
    assert doc["largest_payload_bytes"] > 0
    assert doc["estimated_cost_usd"]["lambda_price_per_million_requests"] == 0.20
    assert not marker.exists()


def test_plan_reports_items_too_large_to_send(tmp_path: Path) -> None:
    (tmp_path / ("x" * 200)).write_text("")
    big_payload = json.dumps({"blob": "y" * 1_048_400})
    result = invoke("plan", str(tmp_path), "--target", "fn", "--payload", big_payload, "--json")
    doc = json.loads(result.stdout)
    assert doc["oversize"] == 1
    assert "over the 1048576-byte" in doc["oversize_items"][0]["reason"]


def test_failed_run_exits_1_with_the_workers_message(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f.txt").write_text("x")
    worker = tmp_path / "w.py"
    worker.write_text("def handler(e, c):\n    raise RuntimeError('disk full on node 4')\n")
    result = invoke("run", str(tmp_path / "data"), "--target", f"{worker}:handler")
    assert result.exit_code == 1
    assert "RuntimeError: disk full on node 4" in result.stdout


BAD_INPUT = [
    (["run", "s3://", "--target", "fn"], "has no bucket"),
    (["run", "examples/datasets", "--target", "worker.py"], "name the function too"),
    (["run", "no/such/folder", "--target", WORKER], "does not exist"),
    (
        ["run", "examples/datasets", "--target", f"{EXAMPLES / 'worker.py'}:nope"],
        "no function 'nope'",
    ),
    (["run", "examples/datasets", "--target", WORKER, "--payload", "{bad"], "not valid JSON"),
    (["run", "examples/datasets", "--target", WORKER, "--payload", "[1]"], "must be a JSON object"),
    (["run", "examples/datasets", "--target", WORKER, "--batch-size", "0"], "greater than 0"),
    (["run", "examples/datasets", "--target", WORKER, "--concurrency", "-2"], "greater than 0"),
    (
        ["run", "examples/datasets", "--target", WORKER, "--mode", "files"],
        "'files' is not one of 'objects', 'prefixes'",
    ),
    (
        ["run", "examples/datasets", "--target", "fn", "--invocation-type", "sync"],
        "'sync' is not one of 'event', 'request-response'",
    ),
    (["run", "examples/datasets", "--target", WORKER, "--modified-after", "last week"], "ISO 8601"),
    (
        ["run", "examples/datasets", "--target", WORKER, "--min-size", "5MB", "--max-size", "1MB"],
        "larger than",
    ),
    (["run", "examples/datasets"], "missing --target"),
    (["run", "examples/datasets", "--target", WORKER, "--no-such-flag"], "No such option"),
    (["run", "examples/datasets", "--target", WORKER, "--wait"], "--wait needs --state"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("hopper: error: ")
    assert message in lines[0]
    assert result.stdout == ""


def test_syntax_error_in_worker_is_bad_input(tmp_path: Path) -> None:
    worker = tmp_path / "broken.py"
    worker.write_text("def handler(event, context)\n    pass\n")
    result = invoke("run", str(EXAMPLES / "datasets"), "--target", f"{worker}:handler")
    assert result.exit_code == 2
    assert "SyntaxError at line 1" in result.stderr


def hopper_script() -> str:
    script = shutil.which("hopper", path=str(Path(sys.executable).parent))
    assert script, "the hopper console script is not installed next to this Python"
    return script


def test_installed_script_runs_the_demo() -> None:
    done = subprocess.run(
        [
            hopper_script(),
            "run",
            "examples/datasets",
            "--mode",
            "prefixes",
            "--target",
            "examples/worker.py:handler",
            "--json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["dispatched"] == 3


def test_installed_script_errors_without_traceback(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    done = subprocess.run(
        [hopper_script(), "run", str(tmp_path / "missing"), "--target", "fn"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert (
        done.stderr.strip() == f"hopper: error: folder {str(tmp_path / 'missing')!r} does not exist"
    )


def test_python_dash_m_hopper() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hopper", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    assert "run" in done.stdout and "plan" in done.stdout


def test_python_dash_m_hopper_from_inside_the_package() -> None:
    """Started there, the package's own folder comes first on sys.path: a module named like
    one of the standard library's (select.py once) would shadow it and crash the start."""
    package = REPO / "src" / "hopper"
    done = subprocess.run(
        [sys.executable, "-m", "hopper", "--help"],
        cwd=package,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "run" in done.stdout and "plan" in done.stdout
    # A local run from there loads the worker processes' modules too.
    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "hopper",
            "run",
            str(EXAMPLES / "datasets"),
            "--target",
            WORKER,
            "--json",
        ],
        cwd=package,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["dispatched"] == 6


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        (
            "s3://no-such-bucket",
            "worker",
            "ListObjectsV2 on bucket no-such-bucket failed: NoSuchBucket",
        ),
        (
            "s3://data-bucket",
            "no-such-fn",
            "GetFunctionConfiguration on function no-such-fn failed",
        ),
    ],
)
def test_missing_aws_resources_fail_with_one_line(
    source: str, target: str, message: str, bucket: str, function: str, received: Any
) -> None:
    result = invoke("run", source, "--target", target)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert received.events == []


def test_schedule_prints_next_fire_times_in_utc() -> None:
    result = invoke("schedule", "cron(0 12 * * ? *)", "--next", "3", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert len(doc["next"]) == 3
    assert all(t.endswith("T12:00:00Z") for t in doc["next"])
    bad = invoke("schedule", "rate(1 minutes)")
    assert bad.exit_code == 2
    assert (
        bad.stderr.strip()
        == "hopper: error: schedule 'rate(1 minutes)': a value of 1 takes the singular unit 'minute'"
    )


def test_schedule_prints_each_fire_time_in_its_zone_and_in_utc() -> None:
    result = invoke("schedule", "cron(0 9 ? * MON-FRI *)", "--timezone", "Europe/Berlin")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 5
    for line in lines:
        # 2026-12-01 09:00 CET (+01:00)  2026-12-01T08:00:00Z, or CEST (+02:00) and 07:00Z.
        local, utc = line.split("  ")
        assert local.split()[1] == "09:00" and local.split()[2] in ("CET", "CEST"), line
        assert utc.endswith(("T08:00:00Z", "T07:00:00Z")) and utc[:10] == local[:10], line
    doc = json.loads(invoke("schedule", "at(2030-01-01T00:00:00)", "--timezone", "Asia/Tokyo",
                            "--json").stdout)  # fmt: skip
    assert doc == {
        "expression": "at(2030-01-01T00:00:00)",
        "timezone": "Asia/Tokyo",
        "next": ["2029-12-31T15:00:00Z"],
        "next_local": ["2030-01-01T00:00:00+09:00"],
    }


LOCAL_RUN = ["run", "examples/datasets", "--target", "examples/worker.py:handler"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["schedule", "rate(5 minutes)", "--timezone", "Mars/Olympus"], "not an IANA time zone"),
        (["schedule", "cron(0 9 * * ? *)", "--timezone", "+01:00"], "not an IANA time zone"),
        (
            [*LOCAL_RUN, "--timezone", "UTC"],
            "--timezone goes with --schedule",
        ),
        (
            [
                *LOCAL_RUN,
                "--state",
                "st",
                "--schedule",
                "rate(1 hour)",
                "--timezone",
                "Europe/Berlinn",
            ],
            "'Europe/Berlinn' is not an IANA time zone",
        ),
    ],
)
def test_a_bad_time_zone_is_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert message in line
    assert not (REPO / "st").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["deploy", "--source", "examples/datasets", "--target", "fn"],
            "deploy needs an S3 source",
        ),
        (
            ["deploy", "--source", "no/such/folder", "--target", "fn"],
            "deploy needs an S3 source",
        ),
        (
            ["deploy", "--source", "s3://bkt-1", "--target", "w.py:handler"],
            "is a local worker: deploy it with --worker w.py:handler",
        ),
        (
            ["deploy", "--source", "s3://bkt-1", "--target", "fn", "--worker", "w.py:handler"],
            "one of them",
        ),
        (
            ["deploy", "--source", "s3://bkt-1", "--target", "fn", "--worker-memory", "1024"],
            "--worker-memory goes with --worker",
        ),
        (
            ["deploy", "--source", "s3://bkt-1", "--worker", "examples/worker.py:handlr"],
            "worker.py defines no 'handlr'",
        ),
        (
            ["deploy", "--source", "s3://bkt-1", "--worker", "examples/nope.py:handler"],
            "examples/nope.py does not exist",
        ),
        (
            [
                "deploy",
                "--source",
                "s3://bkt-1",
                "--worker",
                "examples/worker.py:handler",
                "--worker-env",
                "AWS_REGION=eu-west-1",
            ],
            "Lambda (or hopper) sets AWS_REGION itself",
        ),
        (
            [
                "deploy",
                "--source",
                "s3://bkt-1",
                "--worker",
                "examples/worker.py:handler",
                "--worker-env",
                "NOEQUALS",
            ],
            "--worker-env 'NOEQUALS': use KEY=VALUE",
        ),
        (
            [
                "deploy",
                "--source",
                "s3://bkt-1",
                "--worker",
                "examples/worker.py:handler",
                "--worker-policy",
                "examples/worker.py",
            ],
            "--worker-policy examples/worker.py: not JSON",
        ),
        (
            [
                "deploy",
                "--source",
                "s3://bkt-1",
                "--target",
                "fn",
                "--timezone",
                "Europe/Paris ",
                "--schedule",
                "at(2020-01-01T00:00:00)",
            ],
            "is in the past in Europe/Paris",
        ),
        (
            ["deploy", "--source", "s3://bkt-1", "--target", "fn", "--alarm-email", "me"],
            "--alarm-email 'me' is not an email address",
        ),
        (
            ["deploy", "--source", "s3://bkt-1", "--target", "fn", "--flexible-window", "2000"],
            "--flexible-window must be between 0 and 1440",
        ),
        (
            ["deploy", "--source", "s3://bkt-1", "--target", "fn", "--schedule", "rate(0 minutes)"],
            "greater than 0",
        ),
        (
            [
                "deploy",
                "--source",
                "s3://bkt-1",
                "--target",
                "fn",
                "--schedule",
                "cron(0 12 * * * *)",
            ],
            "exactly one of",
        ),
        (["deploy", "--source", "s3://bkt-1"], "deploy needs the worker: --target FUNCTION"),
        (["logs", "--since", "yesterday"], "--since 'yesterday': use an age"),
        (
            ["deploy", "--source", "s3://bkt-1", "--target", "fn", "--memory", "64"],
            "--memory must be between",
        ),
        (["status", "--stack-name", "has space"], "stack name 'has space'"),
        (["destroy", "--stack-name", "1abc"], "stack name '1abc'"),
    ],
)
def test_deploy_commands_refuse_bad_input_before_any_aws_call(
    args: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Any AWS call would go to a closed port and fail with exit 1, not 2.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.chdir(REPO)
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("threshold", ["1", "20%"])
def test_max_failures_stops_a_local_run_without_state(tmp_path: Path, threshold: str) -> None:
    """--max-failures belongs to the run, not to its state: without --state it still stops."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(30):
        (data / f"f{i:02}.csv").write_text("x\n")
    calls = tmp_path / "calls"
    calls.mkdir()
    worker = tmp_path / "w.py"
    worker.write_text(
        "import os\n"
        "def handler(event, context):\n"
        f"    open(os.path.join({str(calls)!r}, context.aws_request_id), 'w').close()\n"
        "    raise ValueError('cannot parse ' + event['dataset_prefix'])\n"
    )
    result = invoke(
        "run",
        str(data),
        "--target",
        f"{worker}:handler",
        "--concurrency",
        "1",
        "--max-failures",
        threshold,
        "--json",
    )
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert doc["status"] == "failed"
    assert doc["stopped"].startswith("failure threshold crossed")
    # One at a time: the run stopped at the failure that crossed the threshold, and the
    # worker ran exactly that often (a count above 1; a share above 20% once 20 have settled).
    crossed_at = 2 if threshold == "1" else 20
    assert doc["worker_failed"] == crossed_at == len(list(calls.iterdir()))
    assert doc["failed"] == 0
    # What batching had read ahead is reported, not sent; the rest was never even selected.
    assert doc["not_dispatched"] == doc["selected"] - crossed_at
    assert crossed_at < doc["selected"] < 30
    assert doc["cursor"] == f"f{crossed_at - 1:02}.csv"


@pytest.mark.slow
def test_ctrl_c_stops_a_run_without_state_after_the_batches_in_flight(tmp_path: Path) -> None:
    import signal
    import time

    data = tmp_path / "data"
    data.mkdir()
    for i in range(200):
        (data / f"f{i:03}.txt").write_text("x")
    worker = tmp_path / "w.py"
    worker.write_text(
        "import time\ndef handler(event, context):\n    time.sleep(0.05)\n    return 1\n"
    )
    process = subprocess.Popen(
        [hopper_script(), "run", str(data), "--target", f"{worker}:handler", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2.0)
    # To hopper alone, as `kill -INT` would: a terminal's Ctrl-C reaches its workers too.
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    doc = json.loads(stdout)
    assert doc["status"] == "incomplete" and doc["stopped"] == "interrupted"
    assert doc["failed"] == 0 and 0 < doc["dispatched"] < 200
    assert doc["cursor"] is not None
    assert re.search(r"hopper: stopping after the \d+ batch(es)? in flight", stderr), stderr


def test_text_output_prints_every_result_as_it_arrives(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for i in range(40):
        (data / f"set-{i:02}").mkdir(parents=True)
        (data / f"set-{i:02}" / "rows.csv").write_text("a\n1\n")
    worker = tmp_path / "w.py"
    worker.write_text("def handler(event, context):\n    return {'n': len(event['items'])}\n")
    result = invoke("run", str(data), "--mode", "prefixes", "--target", f"{worker}:handler")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if "\t" in line and "{" in line]
    assert sorted(line.split("\t")[0] for line in lines) == [f"set-{i:02}/" for i in range(40)]
    doc = json.loads(
        invoke(
            "run", str(data), "--mode", "prefixes", "--target", f"{worker}:handler", "--json"
        ).stdout
    )
    # The JSON summary keeps 20 and says how many it left out.
    assert len(doc["results"]) == 20 and doc["results_omitted"] == 20


def test_the_runtime_lock_pins_what_the_dev_lock_pins() -> None:
    """make demo installs runtime.lock alone; make test adds dev.lock to the same venv: one
    version of each package in both, or make test would change what demo ran."""

    def pins(name: str) -> dict[str, str]:
        lines = (REPO / "requirements" / name).read_text().splitlines()
        return {
            package.lower(): version
            for package, _, version in (line.partition("==") for line in lines)
            if version and not package.startswith("#")
        }

    runtime, dev = pins("runtime.lock"), pins("dev.lock")
    assert {"boto3", "botocore", "click", "rich"} <= set(runtime)
    assert {package: dev.get(package) for package in runtime} == runtime


def test_retry_works_from_another_folder_and_knows_what_earlier_retries_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The paths a run was given are kept absolute; a second retry sends only what the first
    did not fix; a run with nothing left says so and records nothing."""
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    for name in ("a.csv", "b.csv", "c.csv", "d.csv"):
        (project / "data" / name).write_text("x\n")
    fail = project / "fail.txt"
    fail.write_text("b.csv\nc.csv\n")
    sent = project / "sent.txt"
    (project / "w.py").write_text(
        "def handler(event, context):\n"
        f"    open({str(sent)!r}, 'a').write(event['dataset_prefix'] + '\\n')\n"
        f"    if event['dataset_prefix'] in open({str(fail)!r}).read().split():\n"
        "        raise ValueError('no')\n"
        "    return 1\n"
    )
    monkeypatch.chdir(project)
    first = invoke("run", "data", "--target", "w.py:handler", "--state", "st", "--json")
    assert first.exit_code == 1, first.output
    run_id = json.loads(first.stdout)["run_id"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    state = str(project / "st")
    sent.write_text("")
    fail.write_text("c.csv\n")  # the first retry fixes b, not c
    retried = invoke("retry", run_id, "--state", state, "--json")
    assert retried.exit_code == 1, retried.output
    assert sent.read_text().split() == ["b.csv", "c.csv"]
    sent.write_text("")
    fail.write_text("")
    again = invoke("retry", run_id, "--state", state, "--json")
    assert again.exit_code == 0, again.output
    assert sent.read_text().split() == ["c.csv"]  # b was done by the first retry
    sent.write_text("")
    runs_before = json.loads(invoke("runs", "--state", state, "--json").stdout)
    nothing = invoke("retry", run_id, "--state", state)
    assert nothing.exit_code == 0, nothing.output
    assert nothing.stderr.startswith(f"nothing to retry: run {run_id}")
    assert sent.read_text() == ""
    assert json.loads(invoke("runs", "--state", state, "--json").stdout) == runs_before


def test_a_state_folder_that_does_not_exist_is_bad_input(tmp_path: Path) -> None:
    for args in (
        ["runs"],
        ["report", "20261130T000000Z-abcdef"],
        ["retry", "20261130T000000Z-abcdef"],
        ["collect"],
    ):
        result = invoke(*args, "--state", str(tmp_path / "typo"))
        assert result.exit_code == 2, (args, result.output)
        [line] = result.stderr.strip().splitlines()
        assert "no such folder" in line


def test_a_bare_target_beside_a_worker_file_asks_whether_the_file_was_meant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rowcount.py").write_text("def handler(event, context):\n    return 1\n")
    (tmp_path / "data").mkdir()
    result = invoke("run", "data", "--target", "rowcount")
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert "did you mean rowcount.py:FUNCTION?" in line
    # Named as a function, it is one: the hint does not stand in the way.
    assert "did you mean" not in invoke("plan", "data", "--target", "lambda:rowcount").output


def test_help_shows_choices_and_exit_codes_everywhere() -> None:
    for command in ("run", "plan"):
        text = invoke(command, "--help").stdout
        assert "[objects|prefixes]" in text and "[event|request-response]" in text
    assert 'event["items"][i]["path"]' in invoke("run", "--help").stdout
    for command in (
        "run", "plan", "runs", "report", "retry", "collect", "schedule", "deploy", "status",
        "invoke", "logs", "destroy", "template",
    ):  # fmt: skip
        assert "Exit code" in invoke(command, "--help").stdout, command


def test_plan_with_a_local_target_names_no_lambda_cost_and_labels_its_keys() -> None:
    result = invoke("plan", str(EXAMPLES / "datasets"), "--target", WORKER)
    assert result.exit_code == 0, result.output
    assert "Lambda" not in result.stdout and "too large to send" not in result.stdout
    # The label once, then each key on a line of its own below it.
    assert result.stdout.count("first 6 keys") == 1
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "first 6 keys" in line)
    column = lines[start].index("first 6 keys") + len("first 6 keys")
    keys = [line[column:].strip() for line in lines[start : start + 6]]
    assert len(keys) == 6 and all(keys) and keys == sorted(keys)
    assert all(not line[:column].strip() for line in lines[start + 1 : start + 6])
    lambda_plan = invoke("plan", str(EXAMPLES / "datasets"), "--target", "lambda:worker").stdout
    assert "est. Lambda requests" in lambda_plan and "Lambda's limit: 1048576 bytes" in lambda_plan


def test_one_item_reads_as_one_item_and_keys_stay_on_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "new\nline.csv").write_text("x")
    worker = tmp_path / "w.py"
    worker.write_text("def handler(event, context):\n    return {'name': 'café'}\n")
    result = invoke("run", str(data), "--target", f"{worker}:handler")
    assert result.exit_code == 0, result.output
    assert result.stdout == 'new\\nline.csv\t{"name": "café"}\n'
    assert "dispatched      1 item in 1 batch" in result.stderr


def test_an_incremental_run_shows_what_it_left_unchanged(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.csv").write_text("x")
    args = ("run", str(data), "--target", WORKER, "--state", str(tmp_path / "st"), "--incremental")
    assert invoke(*args).exit_code == 0
    second = invoke(*args)
    assert "unchanged       1" in second.stderr
