"""deploy / status / destroy against moto's CloudFormation over real HTTP (ThreadedMotoServer)."""

from __future__ import annotations

import ast
import hashlib
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from botocore.awsrequest import AWSResponse
from click.testing import CliRunner

import hopper
from hopper.cli import cli
from hopper.deploy import ARTIFACTS, DeployConfig, Deployer, artifact_key, build_artifact
from hopper.package import parse_worker, worker_artifact

from .conftest import create_function
from .faults import response_xml
from .legacy_stack import create_rule_based_stack

STACK = "hopper-test"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def worker_in_moto(server_session: Any) -> dict[str, str]:
    session = server_session
    session.client("s3").create_bucket(Bucket="source-bucket")
    role = session.client("iam").create_role(RoleName="worker-role", AssumeRolePolicyDocument="{}")[
        "Role"
    ]["Arn"]
    arn = create_function(session, "worker", role)
    return {"bucket": "source-bucket", "worker": "worker", "worker_arn": arn}


def deployer(session: Any, lines: list[str] | None = None) -> Deployer:
    return Deployer(
        session=session,
        poll_seconds=0.05,
        progress=(lines.append if lines is not None else None),
    )


def inline_of(iam: Any, role: str, name: str) -> Any:
    document = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
    if isinstance(document, str):
        # moto keeps an inline policy made by CloudFormation as the repr of a Python dict.
        document = ast.literal_eval(unquote(document))
    return document


def resource(session: Any, logical: str, stack: str = STACK) -> str:
    """The physical id of one of the stack's resources. (moto's DescribeStackResource fails on
    a stack with resources it skipped; its listing names those '' instead.)"""
    pages = session.client("cloudformation").get_paginator("list_stack_resources")
    [found] = [
        r["PhysicalResourceId"]
        for page in pages.paginate(StackName=stack)
        for r in page["StackResourceSummaries"]
        if r["LogicalResourceId"] == logical
    ]
    return str(found)


def queue_arn(session: Any, url: str) -> str:
    sqs = session.client("sqs")
    return str(
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
    )


def config(**kw: Any) -> DeployConfig:
    values: dict[str, Any] = {
        "source": "s3://source-bucket/datasets/",
        "target": "worker",
        "stack_name": STACK,
    }
    values.update(kw)
    return DeployConfig(**values)


def test_artifact_is_deterministic_and_holds_the_core_only(tmp_path: Path) -> None:
    first, digest = build_artifact()
    second, again = build_artifact()
    assert first == second and digest == again
    assert digest[:20] in artifact_key("s", digest)
    names = zipfile.ZipFile(io.BytesIO(first)).namelist()
    assert "hopper/handler.py" in names and "hopper/engine.py" in names
    assert "hopper/cli.py" not in names
    # Every module of the core, sub-packages included.
    package = Path(hopper.__file__).parent
    core = {
        f"hopper/{path.relative_to(package).as_posix()}"
        for path in package.rglob("*.py")
        if path.name not in ("cli.py", "__main__.py")
    }
    assert set(names) == core
    assert "hopper/wire/mux.py" in names and "hopper/runstate/run.py" in names
    zipfile.ZipFile(io.BytesIO(first)).extractall(tmp_path)
    # The handler imports with click and rich unavailable, as in the Lambda runtime; so do the
    # modules it loads only when a run needs them (state, the one-thread dispatch loop).
    probe = (
        "import sys; sys.modules['click'] = None; sys.modules['rich'] = None; "
        "import hopper.handler, hopper.runstate.run, hopper.wire.mux; print('ok')"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": str(tmp_path)},
    )
    assert done.stdout.strip() == "ok", done.stderr


@pytest.mark.slow
def test_deploy_creates_least_privilege_resources(
    server_session: Any, worker_in_moto: dict[str, str]
) -> None:
    lines: list[str] = []
    outputs = deployer(server_session, lines).deploy(config())
    assert set(outputs) >= {"FunctionName", "FunctionArn", "ScheduleArn", "RoleArn", "Alarms"}
    assert any("CREATE_COMPLETE" in line for line in lines)
    iam = server_session.client("iam")
    role = outputs["RoleArn"].rpartition("/")[2]
    assert iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"] == []
    names = iam.list_role_policies(RoleName=role)["PolicyNames"]
    assert sorted(names) == ["hopper-collect-results", "hopper-least-privilege"]

    def inline(name: str) -> Any:
        return inline_of(iam, role, name)

    document = inline("hopper-least-privilege")
    statements = {s["Sid"]: s for s in document["Statement"]}
    listing = statements["ListTheSourceBucket"]
    assert listing["Action"] == "s3:ListBucket"
    assert listing["Resource"] == "arn:aws:s3:::source-bucket"
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["datasets/*"]}}
    invoke = statements["InvokeTheWorker"]
    assert invoke["Resource"] == [worker_in_moto["worker_arn"], worker_in_moto["worker_arn"] + ":*"]
    assert statements["ContinueItself"]["Resource"] == outputs["FunctionArn"]
    assert all("*" not in str(s["Action"]) for s in document["Statement"])

    function = server_session.client("lambda").get_function_configuration(
        FunctionName=outputs["FunctionName"]
    )
    # moto's CloudFormation does not pass Architectures on; test_template checks arm64.
    assert function["Runtime"] == "python3.12"
    assert function["Handler"] == "hopper.handler.handler"
    assert function["Environment"]["Variables"]["HOPPER_SOURCE"] == "s3://source-bucket/datasets/"
    assert function["Environment"]["Variables"]["HOPPER_TARGET"] == worker_in_moto["worker_arn"]

    # Tracking: the stack's queue, which only hopper's role may drain. (moto's CloudFormation
    # skips the queue policy and the worker's async config; tests/e2e checks them where real.)
    queue_url = outputs["ResultsQueueUrl"]
    assert function["Environment"]["Variables"]["HOPPER_RESULTS_QUEUE"] == queue_url
    attributes = server_session.client("sqs").get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["All"]
    )["Attributes"]
    assert attributes["QueueArn"] == outputs["ResultsQueueArn"]
    assert attributes["MessageRetentionPeriod"] == "1209600"
    assert int(attributes["VisibilityTimeout"]) > 300  # longer than one hopper invocation
    [collect] = inline("hopper-collect-results")["Statement"]
    assert collect["Resource"] == outputs["ResultsQueueArn"]
    assert sorted(collect["Action"]) == [
        "sqs:ChangeMessageVisibility",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ReceiveMessage",
    ]

    # The schedule starts the hopper with a role of its own: no rule, no resource policy.
    # (moto's CloudFormation skips AWS::Scheduler::Schedule; tests/e2e checks it where real.)
    assert server_session.client("events").list_rules()["Rules"] == []
    lam = server_session.client("lambda")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_policy(FunctionName=outputs["FunctionName"])
    schedule_role = resource(server_session, "ScheduleRole")
    role_document = iam.get_role(RoleName=schedule_role)["Role"]["AssumeRolePolicyDocument"]
    [trust] = role_document["Statement"]
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": "123456789012"}}
    [name] = iam.list_role_policies(RoleName=schedule_role)["PolicyNames"]
    allowed = {s["Sid"]: s for s in inline_of(iam, schedule_role, name)["Statement"]}
    assert allowed["StartTheHopper"]["Resource"] == outputs["FunctionArn"]
    dead_letters = outputs["DeadLetterQueueUrl"]
    assert allowed["DeadLetters"]["Resource"] == queue_arn(server_session, dead_letters)
    assert outputs["Alarms"].split(",") == [
        f"{STACK}-items-failed", f"{STACK}-worker-failed", f"{STACK}-hopper-errors",
        f"{STACK}-undelivered-ticks", f"{STACK}-no-finished-run",
    ]  # fmt: skip

    artifacts = server_session.client("s3").list_objects_v2(
        Bucket="source-bucket", Prefix=ARTIFACTS
    )["Contents"]
    assert [a["Key"] for a in artifacts] == [artifact_key(STACK, build_artifact()[1])]


def test_update_changes_the_schedule_and_status_says_plainly_that_moto_has_none(
    server_session: Any, worker_in_moto: dict[str, str]
) -> None:
    d = deployer(server_session)
    d.deploy(config())
    d.deploy(
        config(schedule="cron(0 6 ? * MON-FRI *)", timezone="Europe/Berlin", flexible_window=15)
    )
    stack = server_session.client("cloudformation").describe_stacks(StackName=STACK)["Stacks"][0]
    given = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
    assert (given["ScheduleExpression"], given["ScheduleTimezone"]) == (
        "cron(0 6 ? * MON-FRI *)",
        "Europe/Berlin",
    )
    assert given["FlexibleWindowMinutes"] == "15"
    # The longest gap is Friday to Monday over the weekend the clocks go back (an hour more):
    # two of them, and the window.
    assert given["RunWatchSeconds"] == str(2 * (3 * 86400 + 3600) + 15 * 60)
    # Emulator gap, moto 5.2.5: its CloudFormation skips AWS::Scheduler::Schedule and the
    # alarms; status says so in their place and reads the rest.
    status = d.status(STACK)
    assert "does not exist, so nothing starts this hopper" in status["schedule"]["missing"]
    assert {a["state"] for a in status["alarms"]} == {"MISSING"}
    assert status["function"]["Runtime"] == "python3.12"
    assert status["last_run"] is None
    assert status["queues"]["dead_letters"]["messages"] == 0


def no_updates(request: Any, **_: Any) -> AWSResponse:
    """What CloudFormation answers an update that changes nothing (a before-send hook)."""
    body = (
        b'<ErrorResponse xmlns="http://cloudformation.amazonaws.com/doc/2010-05-15/"><Error>'
        b"<Type>Sender</Type><Code>ValidationError</Code>"
        b"<Message>No updates are to be performed.</Message></Error><RequestId>r</RequestId></ErrorResponse>"
    )
    return response_xml(request.url, 400, body)


def test_an_update_with_no_changes_is_success(
    server_session: Any, worker_in_moto: dict[str, str]
) -> None:
    d = deployer(server_session)
    first = d.deploy(config())

    server_session.events.register_first("before-send.cloudformation.UpdateStack", no_updates)
    lines: list[str] = []
    again = deployer(server_session, lines).deploy(config())
    assert again == first
    assert any("already up to date" in line for line in lines)


def test_destroy_leaves_nothing_and_is_idempotent(
    server_session: Any, worker_in_moto: dict[str, str]
) -> None:
    lines: list[str] = []
    d = deployer(server_session, lines)
    outputs = d.deploy(config())
    lines.clear()
    done = d.destroy(STACK)
    removed = done.removed
    assert f"stack {STACK}" in removed and any(
        r.startswith("s3://source-bucket/_hopper/artifacts/") for r in removed
    )
    # Within seconds of the deploy: only the deletion's events, none of the creation's.
    assert any("DELETE_COMPLETE" in line for line in lines)
    assert not [line for line in lines if "CREATE_" in line], lines
    assert done.kept == [
        "the worker " + worker_in_moto["worker_arn"] + ", which this stack did not deploy",
        "s3://source-bucket/_hopper/state/: the runs' ledgers and incremental state "
        "(`hopper destroy --purge-state` deletes them)",
    ]
    cfn = server_session.client("cloudformation")
    live = [
        s
        for s in cfn.list_stacks()["StackSummaries"]
        if s["StackName"] == STACK and s["StackStatus"] != "DELETE_COMPLETE"
    ]
    assert live == []
    names = [
        f["FunctionName"] for f in server_session.client("lambda").list_functions()["Functions"]
    ]
    assert outputs["FunctionName"] not in names and "worker" in names
    assert server_session.client("events").list_rules(NamePrefix=STACK)["Rules"] == []
    assert "Contents" not in server_session.client("s3").list_objects_v2(
        Bucket="source-bucket", Prefix=ARTIFACTS
    )
    assert d.destroy(STACK).removed == []
    assert d.status(STACK) == {"stack": STACK, "status": "NOT_DEPLOYED"}


def test_cli_deploy_status_destroy(server_session: Any, worker_in_moto: dict[str, str]) -> None:
    runner = CliRunner()
    deployed = runner.invoke(
        cli,
        [
            "deploy",
            "--source",
            "s3://source-bucket",
            "--target",
            "worker",
            "--stack-name",
            STACK,
            "--schedule",
            "rate(1 minute)",
            "--json",
        ],
    )
    assert deployed.exit_code == 0, deployed.output
    assert json.loads(deployed.stdout)["FunctionName"] == STACK
    assert "CREATE_COMPLETE" in deployed.stderr
    status = runner.invoke(cli, ["status", "--stack-name", STACK, "--json"])
    report = json.loads(status.stdout)
    assert report["function"]["Runtime"] == "python3.12"
    assert report["state"] == "s3://source-bucket/_hopper/state"
    # Read as a person would: one labelled line per part, the gaps said plainly.
    text = runner.invoke(cli, ["status", "--stack-name", STACK])
    assert text.exit_code == 0, text.output
    rows = {line[:13].strip(): line[13:] for line in text.stdout.splitlines() if line[:13].strip()}
    assert rows["stack"] == f"{STACK}  CREATE_COMPLETE"
    assert rows["hopper"] == f"{STACK} (python3.12, 256 MB, 300 s, Active)"
    assert rows["schedule"].startswith(
        f"the stack lists no schedule that Scheduler knows: '{STACK}'"
    )
    assert rows["last run"] == "none yet"
    assert rows["results"].startswith("0 waiting, 0 in flight  http")
    assert rows["alarms"] == f"MISSING           {STACK}-items-failed"
    gone = runner.invoke(cli, ["destroy", "--stack-name", STACK])
    assert gone.exit_code == 0 and f"removed stack {STACK}" in gone.stdout
    # Each package is reported once, and what stays is said.
    [package] = [line for line in gone.stdout.splitlines() if "_hopper/artifacts/" in line]
    assert package.startswith("removed s3://source-bucket/_hopper/artifacts/")
    assert (gone.stdout + gone.stderr).count(package.removeprefix("removed ")) == 1
    assert "kept s3://source-bucket/_hopper/state/: the runs' ledgers" in gone.stdout
    again = runner.invoke(cli, ["destroy", "--stack-name", STACK])
    assert again.exit_code == 0 and "nothing to remove" in again.stdout
    missing = runner.invoke(cli, ["status", "--stack-name", STACK])
    assert missing.exit_code == 1 and "NOT_DEPLOYED" in missing.stdout


def test_deploy_before_the_worker_exists_names_its_arn_and_warns(
    server_session: Any, worker_in_moto: dict[str, str]
) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "deploy",
            "--source",
            "s3://source-bucket",
            "--target",
            "later-worker",
            "--stack-name",
            STACK,
            "--no-track",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "warning: worker later-worker not found (ResourceNotFoundException)" in result.stderr
    expected = "arn:aws:lambda:us-east-1:123456789012:function:later-worker"
    function = server_session.client("lambda").get_function_configuration(FunctionName=STACK)
    assert function["Environment"]["Variables"]["HOPPER_TARGET"] == expected


def test_an_arn_target_is_used_as_given(
    server_session: Any, worker_in_moto: dict[str, str]
) -> None:
    arn = "arn:aws:lambda:us-east-1:123456789012:function:worker:live"
    deployer(server_session).deploy(config(target=arn))
    function = server_session.client("lambda").get_function_configuration(FunctionName=STACK)
    assert function["Environment"]["Variables"]["HOPPER_TARGET"] == arn


def test_tracking_needs_the_worker_and_never_overwrites_its_async_config(
    server_session: Any, worker_in_moto: dict[str, str]
) -> None:
    missing = CliRunner().invoke(
        cli, ["deploy", "--source", "s3://source-bucket", "--target", "later-worker",
              "--stack-name", STACK],
    )  # fmt: skip
    assert missing.exit_code == 2, missing.output
    assert "does not exist" in missing.stderr and "--no-track" in missing.stderr
    sqs = server_session.client("sqs")
    theirs = sqs.create_queue(QueueName="someone-elses")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=theirs, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    server_session.client("lambda").put_function_event_invoke_config(
        FunctionName="worker",
        Qualifier="$LATEST",
        DestinationConfig={"OnFailure": {"Destination": arn}},
    )
    refused = CliRunner().invoke(
        cli, ["deploy", "--source", "s3://source-bucket", "--target", "worker",
              "--stack-name", STACK],
    )  # fmt: skip
    assert refused.exit_code == 2, refused.output
    [line] = refused.stderr.strip().splitlines()
    assert f"already has an asynchronous invocation config sending OnFailure {arn}" in line
    assert "delete-function-event-invoke-config" in line
    # Nothing was created: no stack, no artifact.
    cfn = server_session.client("cloudformation")
    assert all(s["StackName"] != STACK for s in cfn.list_stacks()["StackSummaries"])
    assert "Contents" not in server_session.client("s3").list_objects_v2(
        Bucket="source-bucket", Prefix=ARTIFACTS
    )


@pytest.mark.slow
def test_deploy_with_worker_makes_two_functions_and_a_worker_that_reads_only_the_source(
    server_session: Any, worker_in_moto: dict[str, str], tmp_path: Path
) -> None:
    iam = server_session.client("iam")
    managed = iam.create_policy(
        PolicyName="reads-reference-data",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::ref/*"}
            ]}
        ),
    )["Policy"]["Arn"]  # fmt: skip
    extra = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "WriteMarkers",
                "Effect": "Allow",
                "Action": "s3:PutObject",
                "Resource": "arn:aws:s3:::source-bucket/markers/*",
            }
        ],
    }
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(json.dumps(extra))
    result = CliRunner().invoke(
        cli,
        [
            "deploy", "--source", "s3://source-bucket/datasets/", "--mode", "prefixes",
            "--worker", str(REPO / "examples" / "worker.py") + ":handler", "--stack-name", STACK,
            "--worker-memory", "1024", "--worker-timeout", "120", "--worker-env", "MARKER_PREFIX=markers/",
            "--worker-env", "GREETING=grüezi", "--worker-reserved-concurrency", "5",
            "--worker-policy", str(policy_file), "--worker-managed-policy", managed, "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    outputs = json.loads(result.stdout)
    worker = outputs["WorkerFunctionName"]
    assert worker == f"{STACK}-worker"
    lam = server_session.client("lambda")
    names = {f["FunctionName"] for f in lam.list_functions()["Functions"]}
    assert {STACK, worker} <= names
    hopper_env = lam.get_function_configuration(FunctionName=STACK)["Environment"]["Variables"]
    deployed = lam.get_function_configuration(FunctionName=worker)
    assert hopper_env["HOPPER_TARGET"] == deployed["FunctionArn"]
    assert (deployed["Handler"], deployed["Runtime"]) == ("worker.handler", "python3.12")
    assert (deployed["MemorySize"], deployed["Timeout"]) == (1024, 120)
    assert deployed["Environment"]["Variables"] == {
        "HOPPER_WORKER_OF": STACK,
        "MARKER_PREFIX": "markers/",
        "GREETING": "grüezi",
    }

    # Its role: read the source prefix, write its logs, send its outcomes; plus exactly what
    # the user added.
    role = deployed["Role"].rpartition("/")[2]
    assert role == resource(server_session, "WorkerRole")
    assert sorted(iam.list_role_policies(RoleName=role)["PolicyNames"]) == [
        "worker-least-privilege", "worker-policy", "worker-send-outcomes",
    ]  # fmt: skip
    allowed = {s["Sid"]: s for s in inline_of(iam, role, "worker-least-privilege")["Statement"]}
    assert set(allowed) == {"ListTheSource", "ReadTheSource", "WriteItsOwnLogs"}
    assert allowed["ReadTheSource"]["Action"] == "s3:GetObject"
    assert allowed["ReadTheSource"]["Resource"] == "arn:aws:s3:::source-bucket/datasets/*"
    assert allowed["ListTheSource"]["Condition"] == {"StringLike": {"s3:prefix": ["datasets/*"]}}
    [send] = inline_of(iam, role, "worker-send-outcomes")["Statement"]
    assert (send["Action"], send["Resource"]) == ("sqs:SendMessage", outputs["ResultsQueueArn"])
    assert inline_of(iam, role, "worker-policy") == extra
    # Emulator gap, moto 5.2.5: its CloudFormation ignores a role's ManagedPolicyArns; the
    # parameter is checked here, the attachment on ministack (tests/e2e).
    stack = server_session.client("cloudformation").describe_stacks(StackName=STACK)["Stacks"][0]
    given = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
    # (moto shows a CommaDelimitedList parameter as the list it made of it)
    assert given["WorkerManagedPolicyArns"] in (managed, str([managed]))
    # The hopper may invoke exactly this worker.
    hopper_role = outputs["RoleArn"].rpartition("/")[2]
    invoke = {
        s["Sid"]: s for s in inline_of(iam, hopper_role, "hopper-least-privilege")["Statement"]
    }["InvokeTheWorker"]
    assert invoke["Resource"] == [deployed["FunctionArn"], deployed["FunctionArn"] + ":*"]

    # Both packages, each named by the hash of its bytes.
    s3 = server_session.client("s3")
    keys = sorted(
        o["Key"] for o in s3.list_objects_v2(Bucket="source-bucket", Prefix=ARTIFACTS)["Contents"]
    )
    worker_package = worker_artifact(parse_worker(f"{REPO}/examples/worker.py:handler"))
    assert keys == sorted(
        [
            artifact_key(STACK, build_artifact()[1]),
            artifact_key(STACK, worker_package.digest, "worker"),
        ]
    )
    for key in keys:
        data = s3.get_object(Bucket="source-bucket", Key=key)["Body"].read()
        assert hashlib.sha256(data).hexdigest()[:20] in key
    assert "worker package s3://source-bucket/_hopper/artifacts/" in result.stderr

    # The same again changes nothing and uploads nothing new; destroy takes both functions.
    destroyed = deployer(server_session).destroy(STACK)
    names = {f["FunctionName"] for f in lam.list_functions()["Functions"]}
    assert STACK not in names and worker not in names
    assert not [k for k in destroyed.kept if k.startswith("the worker")]
    assert "Contents" not in s3.list_objects_v2(Bucket="source-bucket", Prefix=ARTIFACTS)


@pytest.mark.slow
def test_a_stack_deployed_with_an_events_rule_updates_to_scheduler_and_leaves_no_rule(
    server_session: Any, worker_in_moto: dict[str, str]
) -> None:
    """The template of the version before Scheduler, as it was: its rule and permission go
    when the stack is updated."""
    data, digest = build_artifact()
    key = artifact_key(STACK, digest)
    server_session.client("s3").put_object(Bucket="source-bucket", Key=key, Body=data)
    current = config(schedule="rate(5 minutes)")
    role = server_session.client("iam").get_role(RoleName="worker-role")["Role"]["Arn"]
    parameters = current.parameters(
        worker_in_moto["worker_arn"], "source-bucket", key, worker_role=role
    )
    cfn = server_session.client("cloudformation")
    old = create_rule_based_stack(cfn, STACK, parameters)
    assert "AWS::Events::Rule" in old
    events = server_session.client("events")
    lam = server_session.client("lambda")
    assert [r["Name"] for r in events.list_rules()["Rules"]] == [STACK]
    assert json.loads(lam.get_policy(FunctionName=STACK)["Policy"])["Statement"]

    lines: list[str] = []
    outputs = deployer(server_session, lines).deploy(current)
    assert cfn.describe_stacks(StackName=STACK)["Stacks"][0]["StackStatus"] == "UPDATE_COMPLETE"
    assert events.list_rules()["Rules"] == []
    # Emulator gap, moto 5.2.5: it cannot delete an AWS::Lambda::Permission (the statement
    # stays in the function's policy); the stack no longer lists it, and tests/e2e checks on
    # ministack that the statement goes.
    logical = {
        r["LogicalResourceId"]
        for r in cfn.list_stack_resources(StackName=STACK)["StackResourceSummaries"]
    }
    assert not logical & {"HopperSchedule", "HopperSchedulePermission"}
    assert {"ScheduleRole", "ScheduleDeadLetters"} <= logical
    assert "RuleArn" not in outputs and outputs["ScheduleName"] == STACK


def test_destroy_purge_state_deletes_the_runs_state_and_nothing_else(
    server_session: Any, worker_in_moto: dict[str, str]
) -> None:
    runner = CliRunner()
    s3 = server_session.client("s3")
    s3.put_object(Bucket="source-bucket", Key="datasets/a.csv", Body=b"x")
    s3.put_object(Bucket="source-bucket", Key="_hopper/statement.txt", Body=b"not state")
    deployed = runner.invoke(cli, ["deploy", "--source", "s3://source-bucket/datasets/",
                                   "--target", "worker", "--stack-name", STACK])  # fmt: skip
    assert deployed.exit_code == 0, deployed.output
    state = "s3://source-bucket/_hopper/state"
    ran = runner.invoke(cli, ["run", "s3://source-bucket/datasets/", "--target", "worker",
                              "--state", state, "--invocation-type", "request-response"])  # fmt: skip
    assert ran.exit_code == 0, ran.output
    stored = s3.list_objects_v2(Bucket="source-bucket", Prefix="_hopper/state/")["KeyCount"]
    assert stored > 0

    gone = runner.invoke(cli, ["destroy", "--stack-name", STACK, "--purge-state"])
    assert gone.exit_code == 0, gone.output
    assert f"removed {state}/ ({stored} objects of run state)" in gone.stdout
    assert "kept s3://source-bucket/_hopper/state/" not in gone.stdout
    left = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="source-bucket").get("Contents", []))
    # The data and a key that merely starts like the state prefix stay.
    assert left == ["_hopper/statement.txt", "datasets/a.csv"]
    runs = runner.invoke(cli, ["runs", "--state", state, "--json"])
    assert (runs.exit_code, json.loads(runs.stdout)) == (0, [])


def test_deploy_from_an_inventory_reads_only_its_reports_and_runs_when_one_lands(
    server_session: Any, worker_in_moto: dict[str, str]
) -> None:
    """An inventory source: the hopper may list and read that configuration's reports, and
    of the source bucket only its state; --on-new-inventory puts an EventBridge rule on the
    reports' manifest.checksum in place of the schedule, and turns on the bucket's EventBridge
    notifications (keeping its others)."""
    s3 = server_session.client("s3")
    s3.create_bucket(Bucket="inventory-dest")
    s3.put_bucket_notification_configuration(
        Bucket="inventory-dest",
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": "arn:aws:sqs:us-east-1:123456789012:elsewhere",
                    "Events": ["s3:ObjectRemoved:*"],
                }
            ]
        },
    )
    source = "inventory:s3://inventory-dest/reports/source-bucket/daily/?prefix=datasets/"
    lines: list[str] = []
    outputs = deployer(server_session, lines).deploy(
        config(source=source, on_new_inventory=True, mode="prefixes")
    )
    assert "ScheduleArn" not in outputs and "ScheduleName" not in outputs
    assert outputs["Alarms"] == f"{STACK}-items-failed,{STACK}-worker-failed,{STACK}-hopper-errors"
    iam = server_session.client("iam")
    role = outputs["RoleArn"].rpartition("/")[2]
    statements = {s["Sid"]: s for s in inline_of(iam, role, "hopper-least-privilege")["Statement"]}
    assert "ListTheSourceBucket" not in statements
    assert statements["ListTheInventoryReports"]["Resource"] == "arn:aws:s3:::inventory-dest"
    assert statements["ListTheInventoryReports"]["Condition"] == {
        "StringLike": {"s3:prefix": ["reports/source-bucket/daily/*"]}
    }
    [read] = inline_of(iam, role, "hopper-read-inventory")["Statement"]
    assert (read["Action"], read["Resource"]) == (
        "s3:GetObject",
        "arn:aws:s3:::inventory-dest/reports/source-bucket/daily/*",
    )
    # The state stays in the source bucket; the worker reads its datasets there.
    assert statements["ReadAndWriteTheState"]["Resource"] == (
        "arn:aws:s3:::source-bucket/_hopper/state/*"
    )
    function = server_session.client("lambda").get_function_configuration(
        FunctionName=outputs["FunctionName"]
    )
    variables = function["Environment"]["Variables"]
    assert variables["HOPPER_SOURCE"] == source
    assert variables["HOPPER_STATE"] == "s3://source-bucket/_hopper/state"
    # The report is sorted in /tmp: the function gets Lambda's largest. (Emulator gap, moto
    # 5.2.5: its CloudFormation leaves a function's EphemeralStorage at 512, so the parameter
    # is checked here and the template's use of it in test_template.)
    stack = server_session.client("cloudformation").describe_stacks(StackName=STACK)["Stacks"][0]
    parameters = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
    assert parameters["EphemeralStorageMB"] == "10240"

    events = server_session.client("events")
    rule = events.describe_rule(Name=outputs["InventoryRuleName"])
    pattern = json.loads(rule["EventPattern"])
    assert pattern["detail"] == {
        "bucket": {"name": ["inventory-dest"]},
        "object": {"key": [{"wildcard": "reports/source-bucket/daily/*/manifest.checksum"}]},
    }
    [target] = events.list_targets_by_rule(Rule=outputs["InventoryRuleName"])["Targets"]
    assert target["Arn"] == outputs["FunctionArn"]
    notifications = s3.get_bucket_notification_configuration(Bucket="inventory-dest")
    assert len(notifications["QueueConfigurations"]) == 1  # kept
    # Emulator gap, moto 5.2.5: it stores EventBridgeConfiguration but leaves it out of
    # GetBucketNotificationConfiguration, so it is read from moto's own model.
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    bucket = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].buckets["inventory-dest"]
    assert bucket.notification_configuration is not None
    assert bucket.notification_configuration.event_bridge == {}
    # A deploy that failed after its stack was made (or a hand that turned them off): the next
    # deploy, with nothing to update in the stack, turns the notifications on again.
    s3.put_bucket_notification_configuration(
        Bucket="inventory-dest",
        NotificationConfiguration={"QueueConfigurations": notifications["QueueConfigurations"]},
    )
    assert bucket.notification_configuration.event_bridge is None

    server_session.events.register_first("before-send.cloudformation.UpdateStack", no_updates)
    again: list[str] = []
    deployer(server_session, again).deploy(
        config(source=source, on_new_inventory=True, mode="prefixes")
    )
    assert any("already up to date" in line for line in again), again
    assert bucket.notification_configuration.event_bridge == {}
    assert any("turned on EventBridge notifications of s3://inventory-dest" in x for x in lines)

    text = CliRunner().invoke(cli, ["status", "--stack-name", STACK]).stdout
    assert (
        "schedule     a new inventory report in s3://inventory-dest/reports/source-bucket/"
        "daily/ starts a run, enabled"
    ) in text
    done = deployer(server_session).destroy(STACK)
    assert (
        "EventBridge notifications of s3://inventory-dest, which deploy turned on "
        "(other rules may use them)"
    ) in done.kept


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("inventory:s3://dest/daily/", "names no source bucket"),
        ("s3://source-bucket/datasets/", None),
    ],
)
def test_inventory_deploy_input_is_checked_first(source: str, says: str | None) -> None:
    from hopper.errors import InvalidInput

    if says is None:
        with pytest.raises(InvalidInput, match="--on-new-inventory goes with an inventory"):
            config(source=source, on_new_inventory=True)
        return
    with pytest.raises(InvalidInput, match=says):
        config(source=source)
