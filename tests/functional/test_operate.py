"""Operating a deployed hopper on moto: `status` (schedule, last run, queues, alarms) and
`logs`, read from moto's Scheduler, CloudWatch, CloudWatch Logs, SQS and S3.

moto's CloudFormation skips the schedule and the alarms (tests/e2e has them for real), so
these tests make them with moto's own APIs, as the stack would have, and check what hopper
reads back.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner

from hopper.cli import cli
from hopper.deploy import Deployer
from hopper.logs import events, format_event, parse_since

from .test_deploy import STACK, config, worker_in_moto  # noqa: F401

pytestmark = pytest.mark.slow


@pytest.fixture
def deployed(server_session: Any, worker_in_moto: dict[str, str]) -> dict[str, str]:  # noqa: F811
    return Deployer(session=server_session, poll_seconds=0.05).deploy(config())


def hopper(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def put_logs(session: Any, group: str, messages: list[str], *, at: datetime) -> None:
    logs = session.client("logs")
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=group)
    stream = f"2026/11/30/[$LATEST]{len(messages)}{int(at.timestamp())}"
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    start = int(at.timestamp() * 1000)
    logs.put_log_events(
        logGroupName=group,
        logStreamName=stream,
        logEvents=[{"timestamp": start + i, "message": m} for i, m in enumerate(messages)],
    )


def record(message: str, *, level: str = "INFO", request: str = "1a2b3c4d-e5f6") -> str:
    """A log record as Lambda's JSON log format writes it."""
    return json.dumps(
        {
            "timestamp": "2026-11-30T10:00:00Z",
            "level": level,
            "message": message,
            "logger": "hopper.handler",
            "requestId": request,
        }
    )


RUN = "20261130T100000Z-aaaaaa"
OTHER = "20261130T101500Z-bbbbbb"


def test_logs_prints_each_record_on_one_line_and_filters_by_run(
    server_session: Any, deployed: dict[str, str]
) -> None:
    now = datetime.now(UTC) - timedelta(minutes=5)
    emf = {
        "_aws": {"CloudWatchMetrics": [{"Metrics": [{"Name": "ItemsDispatched"}, {"Name": "RunsFinished"}]}]},
        "RunId": RUN, "ItemsDispatched": 7, "RunsFinished": 1,
    }  # fmt: skip
    put_logs(
        server_session,
        f"/aws/lambda/{STACK}",
        [
            json.dumps(
                {
                    "time": "2026-11-30T10:00:00Z",
                    "type": "platform.start",
                    "record": {"requestId": "1a2b3c4d-e5f6", "version": "$LATEST"},
                }
            ),
            record("hop 0 of run (new): s3://source-bucket/datasets/ -> worker after None"),
            record(f"hop 0 done: run {RUN} succeeded, dispatched 7\nsecond line"),
            json.dumps(emf),
            record(f"hop 0 done: run {OTHER} failed", level="WARNING"),
            "a line printed as it is\n",
            json.dumps(
                {
                    "time": "2026-11-30T10:00:01Z",
                    "type": "platform.report",
                    "record": {
                        "requestId": "1a2b3c4d-e5f6",
                        "status": "success",
                        "metrics": {
                            "durationMs": 812.5,
                            "maxMemoryUsedMB": 91,
                            "memorySizeMB": 256,
                        },
                    },
                }
            ),
        ],
        at=now,
    )
    shown = hopper("logs", "--stack-name", STACK, "--since", "1h")
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert len(lines) == 7 and all(line[:4] == str(now.year) for line in lines), lines
    body = [line.split(" ", 1)[1] for line in lines]
    assert body[0].startswith("START   ") and "[1a2b3c4d]" in body[0]
    assert body[1] == (
        "INFO    hopper.handler: hop 0 of run (new): s3://source-bucket/datasets/ -> worker "
        "after None  [1a2b3c4d]"
    )
    assert body[2].endswith(f"run {RUN} succeeded, dispatched 7\\nsecond line  [1a2b3c4d]")
    assert body[3] == f"METRICS run {RUN}: ItemsDispatched=7 RunsFinished=1"
    assert body[4].startswith("WARNING hopper.handler: hop 0 done: run " + OTHER)
    assert body[5] == "a line printed as it is"
    assert body[6] == "REPORT  success, 812.5 ms, 91/256 MB  [1a2b3c4d]"

    one_run = hopper("logs", "--stack-name", STACK, "--since", "1h", "--run", RUN)
    assert one_run.exit_code == 0, one_run.output
    assert [line.split(" ", 1)[1][:7] for line in one_run.stdout.splitlines()] == [
        "INFO   ",
        "METRICS",
    ]
    assert all(RUN in line for line in one_run.stdout.splitlines())

    # Nothing that recent: said on stderr, exit 0.
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    empty = hopper("logs", "--stack-name", STACK, "--since", later)
    assert empty.exit_code == 0 and empty.stdout == ""
    assert f"no log records in /aws/lambda/{STACK} since" in empty.stderr


def test_logs_of_the_worker_read_its_own_group(
    server_session: Any, deployed: dict[str, str]
) -> None:
    put_logs(
        server_session,
        "/aws/lambda/worker",
        [record(f"run {RUN} batch 3 attempt 1, 1 item(s)", request="9f8e7d6c")],
        at=datetime.now(UTC),
    )
    shown = hopper("logs", "--stack-name", STACK, "--worker", "--run", RUN)
    assert shown.exit_code == 0, shown.output
    [line] = shown.stdout.splitlines()
    assert line.endswith(
        f"INFO    hopper.handler: run {RUN} batch 3 attempt 1, 1 item(s)  [9f8e7d6c]"
    )
    missing = hopper("logs", "--stack-name", "not-deployed")
    assert missing.exit_code == 1 and "stack not-deployed does not exist" in missing.stderr


def test_follow_prints_new_records_once_each_until_stopped(
    server_session: Any, deployed: dict[str, str]
) -> None:
    group = f"/aws/lambda/{STACK}"
    start = datetime.now(UTC) - timedelta(seconds=30)
    put_logs(server_session, group, [record("first")], at=start)
    stop = threading.Event()
    seen: list[str] = []
    client = server_session.client("logs")

    def follow() -> None:
        for event in events(client, group, since=start, follow=True, stop=stop, poll=0.1):
            seen.append(format_event(event))

    thread = threading.Thread(target=follow)
    thread.start()
    time.sleep(0.5)
    put_logs(server_session, group, [record("second"), record("third")], at=datetime.now(UTC))
    deadline = time.monotonic() + 10
    while len(seen) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.4)  # a few more polls: nothing is printed twice
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert [line.rsplit(": ", 1)[1].split("  ")[0] for line in seen] == ["first", "second", "third"]


def test_since_reads_ages_and_times() -> None:
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert parse_since("90s", now) == now - timedelta(seconds=90)
    assert parse_since("2d", now) == now - timedelta(days=2)
    assert parse_since("2026-11-30T09:00:00Z", now) == datetime(2026, 11, 30, 9, tzinfo=UTC)
    assert parse_since("2026-11-30T10:00:00+01:00", now) == datetime(2026, 11, 30, 9, tzinfo=UTC)


def test_status_shows_the_schedule_in_its_zone_the_last_run_and_the_alarms(
    server_session: Any, deployed: dict[str, str]
) -> None:
    scheduler = server_session.client("scheduler")
    scheduler.create_schedule(
        Name=STACK,
        ScheduleExpression="cron(0 9 ? * MON-FRI *)",
        ScheduleExpressionTimezone="Europe/Berlin",
        FlexibleTimeWindow={"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 15},
        Target={"Arn": deployed["FunctionArn"], "RoleArn": deployed["RoleArn"]},
        State="ENABLED",
    )
    cloudwatch = server_session.client("cloudwatch")
    for name in deployed["Alarms"].split(","):
        cloudwatch.put_metric_alarm(
            AlarmName=name, Namespace="hopper", MetricName="ItemsFailed", Statistic="Sum",
            Period=300, EvaluationPeriods=1, Threshold=0, ComparisonOperator="GreaterThanThreshold",
        )  # fmt: skip
    cloudwatch.set_alarm_state(
        AlarmName=f"{STACK}-worker-failed", StateValue="ALARM", StateReason="2 workers failed"
    )
    s3 = server_session.client("s3")
    for name in ("a.csv", "b.csv"):
        s3.put_object(Bucket="source-bucket", Key=f"datasets/{name}", Body=b"x")
    ran = hopper(
        "run", "s3://source-bucket/datasets/", "--target", "worker", "--state",
        "s3://source-bucket/_hopper/state", "--invocation-type", "request-response", "--json",
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    run_id = json.loads(ran.stdout)["run_id"]

    report = json.loads(hopper("status", "--stack-name", STACK, "--json").stdout)
    schedule = report["schedule"]
    assert (schedule["expression"], schedule["timezone"], schedule["enabled"]) == (
        "cron(0 9 ? * MON-FRI *)",
        "Europe/Berlin",
        True,
    )
    assert schedule["flexible_window_minutes"] == 15
    # moto's CloudFormation made no schedule, so this test made one in a zone the stack did not
    # declare: status says so (as it would of a schedule changed by hand).
    assert schedule["drift"] == "the stack declares UTC; the schedule has Europe/Berlin"
    assert len(schedule["next"]) == 3
    for moment in schedule["next"]:
        local = datetime.fromisoformat(moment["local"])
        assert (local.hour, local.minute) == (9, 0) and local.isoweekday() <= 5
        assert datetime.fromisoformat(moment["utc"].replace("Z", "+00:00")) == local
    last = report["last_run"]
    assert (last["run_id"], last["status"], last["dispatched"], last["processed"]) == (
        run_id,
        "succeeded",
        2,
        2,
    )
    states = {a["name"]: a["state"] for a in report["alarms"]}
    assert states[f"{STACK}-worker-failed"] == "ALARM"
    others = {state for name, state in states.items() if name != f"{STACK}-worker-failed"}
    assert len(states) == 5 and len(others) == 1 and others <= {"OK", "INSUFFICIENT_DATA"}

    text = hopper("status", "--stack-name", STACK).stdout
    assert "cron(0 9 ? * MON-FRI *) in Europe/Berlin, on, up to 15 min late" in text
    assert "  warning    the stack declares UTC; the schedule has Europe/Berlin" in text
    assert f"last run     {run_id}  succeeded" in text
    assert f"ALARM             {STACK}-worker-failed" in text
    assert "dispatched 2, failed 0, not dispatched 0, processed 2, worker failed 0" in text

    # A rate counts from when the schedule was set.
    scheduler.update_schedule(
        Name=STACK,
        ScheduleExpression="rate(15 minutes)",
        FlexibleTimeWindow={"Mode": "OFF"},
        Target={"Arn": deployed["FunctionArn"], "RoleArn": deployed["RoleArn"]},
        State="ENABLED",
    )
    found = scheduler.get_schedule(Name=STACK)
    anchor = found["LastModificationDate"]
    report = json.loads(hopper("status", "--stack-name", STACK, "--json").stdout)
    assert "drift" not in report["schedule"]
    times = [
        datetime.fromisoformat(m["utc"].replace("Z", "+00:00")) for m in report["schedule"]["next"]
    ]
    assert times[0] > datetime.now(UTC) - timedelta(seconds=5)
    assert [(t - anchor).total_seconds() % 900 for t in times] == [0.0, 0.0, 0.0]
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(times)] == [900, 900]
