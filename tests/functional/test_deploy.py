"""deploy / status / destroy against moto's CloudFormation over real HTTP (ThreadedMotoServer)."""

from __future__ import annotations

import ast
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

from .conftest import create_function
from .faults import response_xml

STACK = "hopper-test"


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
    assert set(outputs) >= {"FunctionName", "FunctionArn", "RuleArn", "RoleArn"}
    assert any("CREATE_COMPLETE" in line for line in lines)
    iam = server_session.client("iam")
    role = outputs["RoleArn"].rpartition("/")[2]
    assert iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"] == []
    names = iam.list_role_policies(RoleName=role)["PolicyNames"]
    assert sorted(names) == ["hopper-collect-results", "hopper-least-privilege"]

    def inline(name: str) -> Any:
        document = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        if isinstance(document, str):
            # moto keeps an inline policy made by CloudFormation as the repr of a Python dict.
            document = ast.literal_eval(unquote(document))
        return document

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

    policy = json.loads(
        server_session.client("lambda").get_policy(FunctionName=outputs["FunctionName"])["Policy"]
    )
    [grant] = policy["Statement"]
    assert grant["Principal"] == {"Service": "events.amazonaws.com"}
    assert grant["Condition"]["ArnLike"]["AWS:SourceArn"] == outputs["RuleArn"]

    events = server_session.client("events")
    rule = events.describe_rule(Name=STACK)
    assert rule["ScheduleExpression"] == "rate(15 minutes)" and rule["State"] == "ENABLED"
    [target] = events.list_targets_by_rule(Rule=STACK)["Targets"]
    assert target["Arn"] == outputs["FunctionArn"]

    artifacts = server_session.client("s3").list_objects_v2(
        Bucket="source-bucket", Prefix=ARTIFACTS
    )["Contents"]
    assert [a["Key"] for a in artifacts] == [artifact_key(STACK, build_artifact()[1])]


def test_update_changes_the_schedule_and_no_change_is_success(
    server_session: Any, worker_in_moto: dict[str, str]
) -> None:
    d = deployer(server_session)
    d.deploy(config())
    d.deploy(config(schedule="cron(0 6 ? * MON-FRI *)", schedule_enabled=False))
    rule = server_session.client("events").describe_rule(Name=STACK)
    assert rule["ScheduleExpression"] == "cron(0 6 ? * MON-FRI *)"
    assert rule["State"] == "DISABLED"
    status = d.status(STACK)
    assert status["schedule"] == {
        "expression": "cron(0 6 ? * MON-FRI *)",
        "state": "DISABLED",
        "enabled": False,
    }
    assert status["function"]["Runtime"] == "python3.12"


def test_an_update_with_no_changes_is_success(
    server_session: Any, worker_in_moto: dict[str, str]
) -> None:
    d = deployer(server_session)
    first = d.deploy(config())

    def no_updates(request: Any, **_: Any) -> AWSResponse:
        # What CloudFormation answers an update that changes nothing.
        body = (
            b'<ErrorResponse xmlns="http://cloudformation.amazonaws.com/doc/2010-05-15/"><Error>'
            b"<Type>Sender</Type><Code>ValidationError</Code>"
            b"<Message>No updates are to be performed.</Message></Error><RequestId>r</RequestId></ErrorResponse>"
        )
        return response_xml(request.url, 400, body)

    server_session.events.register_first("before-send.cloudformation.UpdateStack", no_updates)
    lines: list[str] = []
    again = deployer(server_session, lines).deploy(config())
    assert again == first
    assert any("already up to date" in line for line in lines)


def test_destroy_leaves_nothing_and_is_idempotent(
    server_session: Any, worker_in_moto: dict[str, str]
) -> None:
    d = deployer(server_session)
    outputs = d.deploy(config())
    removed = d.destroy(STACK)
    assert f"stack {STACK}" in removed and any(
        r.startswith("s3://source-bucket/_hopper/artifacts/") for r in removed
    )
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
    assert d.destroy(STACK) == []
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
    assert (
        report["schedule"]["expression"] == "rate(1 minute)"
        and report["schedule"]["enabled"] is True
    )
    assert report["function"]["Runtime"] == "python3.12"
    gone = runner.invoke(cli, ["destroy", "--stack-name", STACK])
    assert gone.exit_code == 0 and f"removed stack {STACK}" in gone.stdout
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
