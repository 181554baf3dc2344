"""hopper deployed for real on ministack: the function runs, the worker runs, the rule fires."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pytest
from click.testing import CliRunner

from hopper.cli import cli
from hopper.deploy import ARTIFACTS, DeployConfig, Deployer, artifact_key
from hopper.errors import DeployError

from ..functional.legacy_stack import create_rule_based_stack
from .conftest import make_world, markers, wait_for_markers

ROLE = "arn:aws:iam::000000000000:role/scheduler"

# ministack starts in seconds and its schedule fires within a minute.
pytestmark = pytest.mark.slow


def hopper(*args: str) -> Any:
    result = CliRunner().invoke(cli, list(args))
    return result


def assert_nothing_left(
    ministack_session: Any, stack: str, bucket: str, worker: str | None = None
) -> None:
    """The stack and everything it made are gone; a worker it did not deploy stays."""
    cfn = ministack_session.client("cloudformation")
    live = [
        s["StackName"]
        for s in cfn.list_stacks()["StackSummaries"]
        if s["StackStatus"] != "DELETE_COMPLETE"
    ]
    assert stack not in live
    functions = [
        f["FunctionName"] for f in ministack_session.client("lambda").list_functions()["Functions"]
    ]
    assert stack not in functions and f"{stack}-worker" not in functions
    if worker is not None:
        assert worker in functions
    assert [
        r["Name"]
        for r in ministack_session.client("events").list_rules()["Rules"]
        if r["Name"] == stack
    ] == []
    schedules = ministack_session.client("scheduler").list_schedules()["Schedules"]
    assert [s["Name"] for s in schedules if s["Name"] == stack] == []
    alarms = ministack_session.client("cloudwatch").describe_alarms(AlarmNamePrefix=f"{stack}-")
    assert alarms["MetricAlarms"] == []
    queues = ministack_session.client("sqs").list_queues().get("QueueUrls", [])
    assert [q for q in queues if f"/{stack}-" in q] == []
    assert "Contents" not in ministack_session.client("s3").list_objects_v2(
        Bucket=bucket, Prefix=f"{ARTIFACTS}{stack}/"
    )


def test_deploy_the_worker_invoke_read_status_and_logs_destroy(ministack_session: Any) -> None:
    """The README's walk-through: hopper deploys examples/worker.py itself; every dataset is
    processed (the worker's own markers); status and logs show the run; destroy leaves nothing.

    ministack does not enforce IAM, so the worker may write its markers here; on AWS that
    needs `--worker-policy` with s3:PutObject on markers/ (the README shows it).
    """
    bucket, stack = "e2e-invoke", "hopper-e2e"
    datasets = make_world(ministack_session, bucket, None, "markers/")
    iam = ministack_session.client("iam")
    managed = iam.create_policy(
        PolicyName="e2e-extra",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::ref/*"}]}),
    )["Policy"]["Arn"]  # fmt: skip
    started = time.monotonic()
    deployed = hopper(
        "deploy", "--source", f"s3://{bucket}/datasets", "--mode", "prefixes",
        "--worker", "examples/worker.py:handler", "--worker-env", "MARKER_PREFIX=markers/",
        "--worker-managed-policy", managed, "--stack-name", stack, "--schedule-disabled",
        "--schedule", "cron(0 9 ? * MON-FRI *)", "--timezone", "Europe/Berlin",
        "--alarm-email", "ops@example.com", "--json",
    )  # fmt: skip
    deploy_seconds = time.monotonic() - started
    assert deployed.exit_code == 0, deployed.output
    outputs = json.loads(deployed.stdout)
    assert outputs["FunctionName"] == stack and outputs["WorkerFunctionName"] == f"{stack}-worker"
    assert "confirms the subscription email" in deployed.stderr
    sizes = {
        line.split()[0]: line.partition("(")[2].rstrip(")")
        for line in deployed.stderr.splitlines()
        if " package s3://" in line
    }
    assert set(sizes) == {"hopper", "worker"}

    # What moto's CloudFormation skips, here for real.
    lam = ministack_session.client("lambda")
    worker = lam.get_function_configuration(FunctionName=f"{stack}-worker")
    assert (worker["Handler"], worker["Runtime"]) == ("worker.handler", "python3.12")
    role = worker["Role"].rpartition("/")[2]
    attached = iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
    assert [a["PolicyArn"] for a in attached] == [managed]
    schedule = ministack_session.client("scheduler").get_schedule(Name=stack)
    assert schedule["ScheduleExpression"] == "cron(0 9 ? * MON-FRI *)"
    assert schedule["State"] == "DISABLED"
    assert schedule["Target"]["Arn"] == outputs["FunctionArn"]
    assert schedule["Target"]["DeadLetterConfig"]["Arn"].endswith(
        outputs["DeadLetterQueueUrl"].rpartition("/")[2]
    )
    # Emulator gap, ministack 1.5.33: its CloudFormation drops ScheduleExpressionTimezone
    # (the schedule reads UTC); `hopper schedule` and tests/unit/test_schedule check zones.
    assert schedule.get("ScheduleExpressionTimezone") in ("UTC", None, "Europe/Berlin")
    alarms = ministack_session.client("cloudwatch").describe_alarms(AlarmNamePrefix=f"{stack}-")
    topic = outputs["AlarmTopicArn"]
    assert sorted(a["AlarmName"] for a in alarms["MetricAlarms"]) == sorted(
        outputs["Alarms"].split(",")
    )
    assert all(a["AlarmActions"] == [topic] for a in alarms["MetricAlarms"])
    subscriptions = ministack_session.client("sns").list_subscriptions_by_topic(TopicArn=topic)
    assert [(s["Protocol"], s["Endpoint"]) for s in subscriptions["Subscriptions"]] == [
        ("email", "ops@example.com")
    ]

    invoked = hopper("invoke", "--stack-name", stack, "--json")
    assert invoked.exit_code == 0, invoked.output
    summary = json.loads(invoked.stdout)
    assert summary["status"] == "succeeded"
    assert summary["selected"] == summary["dispatched"] == len(datasets)
    found = wait_for_markers(ministack_session, bucket, "markers/", len(datasets), timeout=60)
    # One marker per dataset and invocation: every dataset exactly once.
    assert Counter(m["key"] for m in found) == Counter(f"datasets/{d}/" for d in datasets)
    sales = next(m for m in found if m["key"] == "datasets/sales-2024/")
    assert sales["summary"]["rows"] == 7 and sales["summary"]["totals"]["units"] == 70.0
    assert {m["hopper"]["run_id"] for m in found} == {summary["run_id"]}

    status = json.loads(hopper("status", "--stack-name", stack, "--json").stdout)
    assert status["status"] in ("CREATE_COMPLETE", "UPDATE_COMPLETE")
    assert status["schedule"]["enabled"] is False
    assert status["worker"]["FunctionName"] == f"{stack}-worker"
    assert status["worker"]["Environment"] == ["HOPPER_WORKER_OF", "MARKER_PREFIX"]
    assert status["last_run"]["run_id"] == summary["run_id"]
    assert status["last_run"]["status"] == "succeeded"
    assert {a["state"] for a in status["alarms"]} <= {"OK", "INSUFFICIENT_DATA", "ALARM"}

    run_logs = hopper("logs", "--stack-name", stack, "--run", summary["run_id"])
    assert run_logs.exit_code == 0, run_logs.output
    assert f"hop 0 done: run {summary['run_id']} succeeded" in run_logs.stdout
    assert f"METRICS run {summary['run_id']}: ItemsDispatched={len(datasets)}" in run_logs.stdout
    worker_logs = hopper("logs", "--stack-name", stack, "--worker", "--run", summary["run_id"])
    assert worker_logs.exit_code == 0, worker_logs.output
    assert worker_logs.stdout.count(f"run {summary['run_id']} batch") == len(datasets)

    destroyed = hopper("destroy", "--stack-name", stack)
    assert destroyed.exit_code == 0, destroyed.output
    assert f"kept s3://{bucket}/_hopper/state/" in destroyed.stdout
    assert "CREATE_" not in destroyed.stderr
    assert_nothing_left(ministack_session, stack, bucket)
    print(
        f"\ne2e deploy --worker on ministack: {deploy_seconds:.1f}s; packages {sizes}; "
        f"whole test {time.monotonic() - started:.1f}s"
    )


def test_a_failed_update_shows_the_resources_reasons(
    ministack_session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket, worker, stack = "e2e-fail", "fail-worker", "hopper-fails"
    make_world(ministack_session, bucket, worker, "markers/")
    deployer = Deployer(session=ministack_session, poll_seconds=0.2)
    config = DeployConfig(source=f"s3://{bucket}/datasets", target=worker, stack_name=stack)
    deployer.deploy(config)
    # A new package whose upload is lost: the function's code update cannot find it.
    monkeypatch.setattr("hopper.deploy.build_artifact", lambda: (b"new code", "f" * 64))
    monkeypatch.setattr(Deployer, "_upload", lambda self, bucket, key, data: None)
    with pytest.raises(DeployError) as caught:
        deployer.deploy(config)
    message = str(caught.value)
    print(f"\n{message}")
    assert "UPDATE_ROLLBACK_COMPLETE" in message and "HopperFunction" in message, message
    monkeypatch.undo()
    assert deployer.destroy(stack).removed[0] == f"stack {stack}"


def test_the_schedule_fires_by_itself(ministack_session: Any) -> None:
    bucket, worker, stack = "e2e-schedule", "tick-worker", "hopper-tick"
    datasets = make_world(ministack_session, bucket, worker, "ticks/")
    deployed = hopper(
        "deploy", "--source", f"s3://{bucket}/datasets", "--target", worker, "--mode", "prefixes",
        "--stack-name", stack, "--schedule", "rate(1 minute)",
    )  # fmt: skip
    assert deployed.exit_code == 0, deployed.output
    started = time.monotonic()
    try:
        found = wait_for_markers(ministack_session, bucket, "ticks/", len(datasets), timeout=150)
        fired_after = time.monotonic() - started
        assert {m["key"] for m in found} >= {f"datasets/{d}/" for d in datasets}, found
        print(f"\nrate(1 minute) fired after {fired_after:.0f}s")
        assert fired_after < 150
        # The run the schedule started, as status shows it.
        status = json.loads(hopper("status", "--stack-name", stack, "--json").stdout)
        assert status["schedule"]["expression"] == "rate(1 minute)"
        assert status["schedule"]["enabled"] is True and len(status["schedule"]["next"]) == 3
        assert status["last_run"]["run_id"] == found[0]["hopper"]["run_id"]
    finally:
        assert hopper("destroy", "--stack-name", stack).exit_code == 0
    assert_nothing_left(ministack_session, stack, bucket, worker)
    assert markers(ministack_session, bucket, "ticks/")


def test_a_stack_with_the_events_rule_updates_to_scheduler(ministack_session: Any) -> None:
    """The version before Scheduler deployed a CloudWatch Events rule and a Lambda permission;
    an update with this version replaces them with the schedule and leaves neither behind."""
    from hopper.package import build_artifact

    bucket, worker, stack = "e2e-migrate", "old-worker", "hopper-old"
    make_world(ministack_session, bucket, worker, "unused/")
    data, digest = build_artifact()
    key = artifact_key(stack, digest)
    ministack_session.client("s3").put_object(Bucket=bucket, Key=key, Body=data)
    lam = ministack_session.client("lambda")
    target = lam.get_function_configuration(FunctionName=worker)
    config = DeployConfig(source=f"s3://{bucket}/datasets", target=worker, stack_name=stack)
    parameters = config.parameters(target["FunctionArn"], bucket, key, worker_role=target["Role"])
    cfn = ministack_session.client("cloudformation")
    create_rule_based_stack(cfn, stack, parameters)
    cfn.get_waiter("stack_create_complete").wait(
        StackName=stack, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    events = ministack_session.client("events")
    assert [r["Name"] for r in events.list_rules(NamePrefix=stack)["Rules"]] == [stack]
    assert json.loads(lam.get_policy(FunctionName=stack)["Policy"])["Statement"]

    updated = hopper(
        "deploy", "--source", f"s3://{bucket}/datasets", "--target", worker,
        "--stack-name", stack, "--json",
    )  # fmt: skip
    assert updated.exit_code == 0, updated.output
    assert "UPDATE_COMPLETE" in updated.stderr
    assert events.list_rules(NamePrefix=stack)["Rules"] == []
    try:
        statements = json.loads(lam.get_policy(FunctionName=stack)["Policy"])["Statement"]
    except lam.exceptions.ResourceNotFoundException:
        statements = []
    assert statements == []
    assert ministack_session.client("scheduler").get_schedule(Name=stack)["State"] == "ENABLED"
    assert hopper("destroy", "--stack-name", stack).exit_code == 0
    assert_nothing_left(ministack_session, stack, bucket, worker)


VALID_SCHEDULES = [
    "rate(1 minute)", "rate(15 minutes)", "rate(1 day)", "cron(0 12 * * ? *)", "cron(0/20 8 * * ? *)",
    "cron(0 18 ? * MON-FRI *)", "cron(0 0 L * ? *)", "cron(0 0 LW * ? *)", "cron(0 0 15W * ? *)",
    "cron(0 10 ? * 6L *)", "cron(0 10 ? * 3#2 *)", "cron(0 0 1 JAN,JUL ? 2027-2028)",
    "at(2030-06-01T09:30:00)",
]  # fmt: skip


def test_expressions_hopper_accepts_are_accepted_by_create_schedule(
    ministack_session: Any,
) -> None:
    from hopper.schedule import parse_schedule, parse_timezone

    scheduler = ministack_session.client("scheduler")
    target = {"Arn": "arn:aws:lambda:us-east-1:000000000000:function:x", "RoleArn": ROLE}
    for expression in VALID_SCHEDULES:
        parse_schedule(expression)
        parse_timezone("America/New_York")
        scheduler.create_schedule(
            Name="hopper-conformance",
            ScheduleExpression=expression,
            ScheduleExpressionTimezone="America/New_York",
            FlexibleTimeWindow={"Mode": "OFF"},
            Target=target,
            State="DISABLED",
        )
        found = scheduler.get_schedule(Name="hopper-conformance")
        assert found["ScheduleExpression"] == expression
        assert found["ScheduleExpressionTimezone"] == "America/New_York"
        scheduler.delete_schedule(Name="hopper-conformance")


PICKY_WORKER = """
import json, os
import boto3

def handler(event, context):
    s3 = boto3.client("s3")
    dataset = event["dataset_prefix"]
    name = dataset.rstrip("/").rsplit("/", 1)[-1]
    try:
        s3.head_object(Bucket=event["bucket"], Key="control/fail-" + name)
    except Exception:
        pass
    else:
        raise ValueError("cannot read " + dataset)
    s3.put_object(
        Bucket=event["bucket"],
        Key="picky/" + name + "/" + context.aws_request_id,
        Body=json.dumps({"key": dataset, "run_id": event["hopper"]["run_id"]}).encode(),
    )
    return {"dataset": dataset}
"""


def test_a_worker_failure_reaches_the_ledger_and_retry_sends_only_it(
    ministack_session: Any,
) -> None:
    """Tracking where it is real: ministack's CloudFormation creates the results queue, its
    policy and the worker's async config; its Lambda retries a failing async invocation and
    delivers the OnFailure record to the queue.

    Emulator gap, ministack 1.5.33: it never delivers OnSuccess records, so the datasets the
    worker processed stay pending here (on AWS their Success records arrive too). The
    success path of collect is tested on moto, with records written as Lambda sends them.
    """
    import io
    import zipfile

    started = time.monotonic()
    bucket, worker, stack = "e2e-track", "picky-worker", "hopper-track"
    datasets = make_world(ministack_session, bucket, worker, "unused/")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("worker.py", PICKY_WORKER)
    lam = ministack_session.client("lambda")
    lam.update_function_code(FunctionName=worker, ZipFile=buffer.getvalue())
    s3 = ministack_session.client("s3")
    s3.put_object(Bucket=bucket, Key="control/fail-inventory", Body=b"")

    deployed = hopper(
        "deploy", "--source", f"s3://{bucket}/datasets", "--target", worker, "--mode", "prefixes",
        "--stack-name", stack, "--schedule-disabled", "--json",
    )  # fmt: skip
    assert deployed.exit_code == 0, deployed.output
    outputs = json.loads(deployed.stdout)
    queue_arn = outputs["ResultsQueueArn"]
    # What moto's CloudFormation skips, checked where it is real.
    config = lam.get_function_event_invoke_config(FunctionName=worker, Qualifier="$LATEST")
    assert config["DestinationConfig"]["OnSuccess"]["Destination"] == queue_arn
    assert config["DestinationConfig"]["OnFailure"]["Destination"] == queue_arn
    policy = json.loads(
        ministack_session.client("sqs").get_queue_attributes(
            QueueUrl=outputs["ResultsQueueUrl"], AttributeNames=["Policy"]
        )["Attributes"]["Policy"]
    )
    [allow] = policy["Statement"]
    worker_role = lam.get_function_configuration(FunctionName=worker)["Role"]
    assert allow["Principal"] == {"AWS": worker_role} and allow["Action"] == "sqs:SendMessage"

    # Wait, collecting, for the workers' outcomes: the failure record comes after ministack's
    # retries; the successes never come (the gap above), so the wait runs out with them pending.
    invoked = hopper("invoke", "--stack-name", stack, "--json", "--wait-for-workers", "15")
    assert invoked.exit_code == 1, invoked.output
    summary = json.loads(invoked.stdout)
    assert summary["dispatched"] == len(datasets) and summary["waited"] is True
    assert (summary["worker_failed"], summary["pending"]) == (1, len(datasets) - 1)
    run_id = summary["run_id"]
    state = f"s3://{bucket}/_hopper/state"
    collected = json.loads(hopper("collect", "--state", state, "--json").stdout)
    assert collected["received"] == 0  # the wait stored everything there was
    document = json.loads(hopper("report", run_id, "--state", state, "--json").stdout)
    assert document["worker_failed"] == 1, document
    [failure] = document["failures"]
    assert failure["keys"] == ["datasets/inventory/"] and failure["status"] == "worker_failed"
    assert failure["error"] == "cannot read datasets/inventory/"
    assert document["status"] == "failed"
    assert document["pending"] == len(datasets) - 1  # the OnSuccess gap, above
    print(f"\nworker failure record collected {time.monotonic() - started:.1f}s after start")

    s3.delete_object(Bucket=bucket, Key="control/fail-inventory")
    retried = hopper("retry", run_id, "--state", state, "--json")
    assert retried.exit_code == 0, retried.output
    again = json.loads(retried.stdout)
    assert again["selected"] == again["dispatched"] == 1
    found = wait_for_markers(ministack_session, bucket, "picky/inventory/", 1, timeout=30)
    assert [m["key"] for m in found] == ["datasets/inventory/"]
    assert {m["run_id"] for m in found} == {again["run_id"]}

    destroyed = hopper("destroy", "--stack-name", stack)
    assert destroyed.exit_code == 0, destroyed.output
    # The stack took its async config with it: the worker is as it was before deploy.
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_event_invoke_config(FunctionName=worker, Qualifier="$LATEST")
    print(f"e2e tracking on ministack: {time.monotonic() - started:.1f}s")


def test_a_new_inventory_report_starts_a_run_that_reads_it(ministack_session: Any) -> None:
    """deploy --source inventory:… --on-new-inventory, for real: writing a report's
    manifest.checksum fires the stack's rule, the deployed hopper reads and sorts the report
    (not the bucket), and the deployed worker processes each dataset the report lists."""
    from ..functional.inventory_reports import Row, write_report

    started = time.monotonic()
    bucket, stack = "e2e-inv-data", "hopper-inv"
    make_world(ministack_session, bucket, None, "markers/")
    s3 = ministack_session.client("s3")
    s3.create_bucket(Bucket="e2e-inventories")
    url = write_report(s3, [Row("datasets/placeholder/x.csv")], dest="e2e-inventories",
                       source=bucket, when="2026-11-29T00-00Z")  # fmt: skip
    deployed = hopper(
        "deploy", "--source", f"inventory:{url}?prefix=datasets/", "--mode", "prefixes",
        "--worker", "examples/worker.py:handler", "--worker-env", "MARKER_PREFIX=markers/",
        "--on-new-inventory", "--stack-name", stack, "--json",
    )  # fmt: skip
    assert deployed.exit_code == 0, deployed.output
    assert "turned on EventBridge notifications of s3://e2e-inventories" in deployed.stderr

    # The report lists two of the three datasets (and a delete marker): only those run.
    listed = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket=bucket, Prefix="datasets/")["Contents"]
        if not o["Key"].startswith("datasets/weather-station-7/")
    ]
    rows = [Row(key) for key in listed] + [Row("datasets/gone/x.csv", delete_marker=True)]
    write_report(s3, rows, dest="e2e-inventories", source=bucket, when="2026-11-30T00-00Z")
    found = wait_for_markers(ministack_session, bucket, "markers/", 2, timeout=60)
    assert sorted(m["key"] for m in found) == ["datasets/inventory/", "datasets/sales-2024/"]
    status = json.loads(hopper("status", "--stack-name", stack, "--json").stdout)
    assert status["schedule"]["enabled"] is True
    assert status["last_run"]["dispatched"] == 2
    print(f"\ninventory report to processed datasets: {time.monotonic() - started:.1f}s")

    destroyed = hopper("destroy", "--stack-name", stack)
    assert destroyed.exit_code == 0, destroyed.output
    assert "kept EventBridge notifications of s3://e2e-inventories" in destroyed.stdout
    assert_nothing_left(ministack_session, stack, bucket)
    rule = json.loads(deployed.stdout)["InventoryRuleName"]
    rules = ministack_session.client("events").list_rules()["Rules"]
    assert rule not in [r["Name"] for r in rules]
