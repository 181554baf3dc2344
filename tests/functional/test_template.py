"""The CloudFormation template: linters clean, least privilege, the seed's resources made real."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import lint_all
from cfnlint.decode import cfn_yaml

from hopper.deploy import template_text

REPO = Path(__file__).resolve().parents[2]
CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"


@pytest.fixture(scope="module")
def template() -> Any:
    return cfn_yaml.loads(template_text())


def test_cfn_lint_reports_nothing() -> None:
    assert [str(m) for m in lint_all(template_text())] == []


@pytest.mark.slow
def test_checkov_has_no_failed_checks(tmp_path: Path, template: Any) -> None:
    if not CHECKOV.exists():
        if os.environ.get("HOPPER_REQUIRE_TOOLS"):
            pytest.fail(f"{CHECKOV} is missing; `make test` installs it")
        pytest.skip("checkov is installed by `make test` in .venv-checkov")
    path = tmp_path / "template.yaml"
    path.write_text(template_text())
    done = subprocess.run(
        [str(CHECKOV), "-f", str(path), "--framework", "cloudformation", "-o", "json", "--skip-download"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    report = json.loads(done.stdout)
    assert report["summary"]["failed"] == 0, [
        c["check_id"] for c in report["results"]["failed_checks"]
    ]
    assert report["summary"]["passed"] > 10
    # Every skip is one written in a resource's Metadata, with its reason.
    reasons = {
        skip["id"]: skip["comment"]
        for resource in template["Resources"].values()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    }
    skipped = {c["check_id"] for c in report["results"]["skipped_checks"]}
    assert skipped == set(reasons)
    assert all(len(reason) > 40 for reason in reasons.values())


def statements(template: Any, role: str) -> dict[str, Any]:
    """A role's inline statements, and those of the AWS::IAM::Policy resources naming it."""
    resources = template["Resources"]
    documents = [p["PolicyDocument"] for p in resources[role]["Properties"]["Policies"]]
    documents += [
        r["Properties"]["PolicyDocument"]
        for r in resources.values()
        if r["Type"] == "AWS::IAM::Policy" and r["Properties"]["Roles"] == [{"Ref": role}]
    ]
    found = {}
    for document in documents:
        for statement in document["Statement"]:
            # A statement chosen by a condition: both branches count (but AWS::NoValue).
            branches = statement["Fn::If"][1:] if "Fn::If" in statement else [statement]
            for branch in branches:
                if branch != {"Ref": "AWS::NoValue"}:
                    found[branch["Sid"]] = branch
    return found


def actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


@pytest.mark.parametrize("role", ["HopperRole", "WorkerRole", "ScheduleRole"])
def test_no_managed_policies_and_no_wildcard_actions(template: Any, role: str) -> None:
    properties = template["Resources"][role]["Properties"]
    # The worker's role gets managed policies only when the user names them.
    assert (
        properties.get("ManagedPolicyArns", {"Fn::If": ["WorkerManaged"]})["Fn::If"][0]
        == "WorkerManaged"
    )
    for statement in statements(template, role).values():
        assert all("*" not in action for action in actions(statement))
        assert statement["Resource"] != "*"


def test_function_is_current_arm64_json_logging_and_may_recurse(template: Any) -> None:
    function = template["Resources"]["HopperFunction"]["Properties"]
    runtime = function["Runtime"]
    assert runtime.startswith("python3.") and int(runtime.split(".")[1]) >= 12
    assert function["Architectures"] == ["arm64"]
    assert function["RecursiveLoop"] == "Allow"
    assert function["EphemeralStorage"] == {"Size": {"Ref": "EphemeralStorageMB"}}
    assert function["LoggingConfig"]["LogFormat"] == "JSON"
    assert function["Handler"] == "hopper.handler.handler"
    assert template["Resources"]["HopperLogGroup"]["Properties"]["RetentionInDays"] == {
        "Ref": "LogRetentionDays"
    }


def test_the_schedule_is_scheduler_in_its_zone_with_retries_and_dead_letters(
    template: Any,
) -> None:
    resources = template["Resources"]
    # The only rule and permission start a run per new inventory report, instead of a schedule.
    legacy = {
        name: r.get("Condition")
        for name, r in resources.items()
        if r["Type"].startswith("AWS::Events::") or r["Type"] == "AWS::Lambda::Permission"
    }
    assert legacy == {"InventoryRule": "OnNewReport", "InventoryRulePermission": "OnNewReport"}
    assert resources["Schedule"]["Condition"] == "Scheduled"
    schedule = resources["Schedule"]["Properties"]
    assert resources["Schedule"]["Type"] == "AWS::Scheduler::Schedule"
    assert schedule["ScheduleExpressionTimezone"] == {"Ref": "ScheduleTimezone"}
    assert schedule["State"] == {"Fn::If": ["ScheduleOn", "ENABLED", "DISABLED"]}
    assert schedule["FlexibleTimeWindow"]["Fn::If"][0] == "Flexible"
    target = schedule["Target"]
    assert target["Arn"] == {"Fn::GetAtt": ["HopperFunction", "Arn"]}
    assert target["RoleArn"] == {"Fn::GetAtt": ["ScheduleRole", "Arn"]}
    assert target["RetryPolicy"] == {
        "MaximumRetryAttempts": {"Ref": "ScheduleRetries"},
        "MaximumEventAgeInSeconds": {"Ref": "ScheduleMaxEventAgeSeconds"},
    }
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["ScheduleDeadLetters", "Arn"]}}
    # Only Scheduler, on behalf of this account, may assume the role; it starts only the hopper.
    [trust] = resources["ScheduleRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    allowed = statements(template, "ScheduleRole")
    assert {sid: (actions(s), s["Resource"]) for sid, s in allowed.items()} == {
        "StartTheHopper": (["lambda:InvokeFunction"], {"Fn::GetAtt": ["HopperFunction", "Arn"]}),
        "DeadLetters": (["sqs:SendMessage"], {"Fn::GetAtt": ["ScheduleDeadLetters", "Arn"]}),
    }


def test_the_deployed_worker_may_read_only_the_source_prefix(template: Any) -> None:
    resources = template["Resources"]
    worker = resources["WorkerFunction"]
    assert worker["Condition"] == "HasWorker"
    properties = worker["Properties"]
    assert properties["Runtime"] == "python3.12" and properties["Architectures"] == ["arm64"]
    assert properties["Code"] == {
        "S3Bucket": {"Ref": "ArtifactBucket"},
        "S3Key": {"Ref": "WorkerArtifactKey"},
    }
    assert properties["LoggingConfig"]["LogGroup"] == {"Ref": "WorkerLogGroup"}
    allowed = statements(template, "WorkerRole")
    assert set(allowed) == {"ListTheSource", "ReadTheSource", "WriteItsOwnLogs", "SendItsOutcomes"}
    assert actions(allowed["ReadTheSource"]) == ["s3:GetObject"]
    assert allowed["ReadTheSource"]["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:s3:::${SourceBucket}/${SourcePrefix}*"
    }
    assert allowed["ListTheSource"]["Condition"]["Fn::If"][1] == {
        "StringLike": {"s3:prefix": [{"Fn::Sub": "${SourcePrefix}*"}]}
    }
    assert allowed["WriteItsOwnLogs"]["Resource"] == {"Fn::GetAtt": ["WorkerLogGroup", "Arn"]}
    assert allowed["SendItsOutcomes"]["Resource"] == {"Fn::GetAtt": ["ResultsQueue", "Arn"]}
    assert resources["WorkerDeliversOutcomes"]["Condition"] == "TrackedWorker"
    # The stack's own worker gets its async config only once it exists.
    config = resources["WorkerInvokeConfig"]["Properties"]
    assert config["FunctionName"] == {
        "Fn::If": ["HasWorker", {"Ref": "WorkerFunction"}, {"Ref": "TargetFunctionName"}]
    }


ALARMS = {
    "ItemsFailedAlarm": ("hopper", "ItemsFailed", "GreaterThanThreshold", "notBreaching"),
    "WorkerFailedAlarm": ("hopper", "WorkerFailed", "GreaterThanThreshold", "notBreaching"),
    "HopperErrorsAlarm": ("AWS/Lambda", "Errors", "GreaterThanThreshold", "notBreaching"),
    "DeadLettersAlarm": (
        "AWS/SQS", "ApproximateNumberOfMessagesVisible", "GreaterThanThreshold", "notBreaching"
    ),
    "NoRunAlarm": ("hopper", "RunsFinished", "LessThanThreshold", "breaching"),
}  # fmt: skip


def test_alarms_watch_failures_errors_dead_letters_and_missing_runs(template: Any) -> None:
    resources = template["Resources"]
    alarms = {k: r["Properties"] for k, r in resources.items() if r["Type"].endswith("::Alarm")}
    assert {
        name: (a["Namespace"], a["MetricName"], a["ComparisonOperator"], a["TreatMissingData"])
        for name, a in alarms.items()
    } == ALARMS
    for alarm in alarms.values():
        assert alarm["AlarmActions"] == {
            "Fn::If": [
                "AlarmByEmail",
                [{"Ref": "AlarmTopic"}],
                {"Fn::If": ["AlarmToTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]},
            ]
        }
    assert alarms["NoRunAlarm"]["Period"] == {"Ref": "RunWatchSeconds"}
    assert resources["NoRunAlarm"]["Condition"] == "WatchRuns"
    subscription = resources["AlarmSubscription"]
    assert subscription["Condition"] == "AlarmByEmail"
    assert subscription["Properties"]["Protocol"] == "email"


def test_parameters_and_outputs(template: Any) -> None:
    assert set(template["Parameters"]) >= {
        "SourceBucket", "SourcePrefix", "TargetFunctionArn", "ScheduleExpression", "ScheduleEnabled", "Mode",
        "BatchSize", "Concurrency", "InvocationType", "MemorySize", "Timeout",
    }  # fmt: skip
    assert set(template["Outputs"]) >= {
        "FunctionName", "FunctionArn", "ScheduleArn", "ScheduleName", "RoleArn", "Alarms",
        "DeadLetterQueueUrl",
    }  # fmt: skip


def test_tracking_owns_a_queue_the_worker_may_only_send_to_and_hopper_only_drain(
    template: Any,
) -> None:
    resources = template["Resources"]
    queue = resources["ResultsQueue"]
    assert queue["Condition"] == "Tracking"
    assert queue["Properties"]["SqsManagedSseEnabled"] is True
    assert queue["Properties"]["MessageRetentionPeriod"] == 1209600
    # Longer than one hopper invocation: deploy sets it from the timeout.
    assert queue["Properties"]["VisibilityTimeout"] == {"Ref": "QueueVisibilitySeconds"}
    [allow] = resources["ResultsQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert allow["Principal"] == {
        "AWS": {
            "Fn::If": ["HasWorker", {"Fn::GetAtt": ["WorkerRole", "Arn"]}, {"Ref": "WorkerRoleArn"}]
        }
    }
    assert allow["Action"] == "sqs:SendMessage"
    assert allow["Resource"] == {"Fn::GetAtt": ["ResultsQueue", "Arn"]}
    config = resources["WorkerInvokeConfig"]["Properties"]
    assert config["Qualifier"] == {"Ref": "TargetQualifier"}
    assert config["DestinationConfig"] == {
        "OnSuccess": {"Destination": {"Fn::GetAtt": ["ResultsQueue", "Arn"]}},
        "OnFailure": {"Destination": {"Fn::GetAtt": ["ResultsQueue", "Arn"]}},
    }
    assert config["MaximumEventAgeInSeconds"] == {"Ref": "MaxEventAgeSeconds"}
    collecting = resources["HopperCollectPolicy"]
    assert collecting["Condition"] == "Tracking"
    assert collecting["Properties"]["Roles"] == [{"Ref": "HopperRole"}]
    [collect] = collecting["Properties"]["PolicyDocument"]["Statement"]
    hopper_statements = [collect, *statements(template, "HopperRole").values()]
    assert sorted(collect["Action"]) == [
        "sqs:ChangeMessageVisibility",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ReceiveMessage",
    ]
    assert collect["Resource"] == {"Fn::GetAtt": ["ResultsQueue", "Arn"]}
    sqs_anywhere = {s["Sid"] for s in hopper_statements if any("sqs:" in a for a in actions(s))}
    assert sqs_anywhere == {"CollectTheWorkersOutcomes"}
    environment = resources["HopperFunction"]["Properties"]["Environment"]["Variables"]
    assert environment["HOPPER_RESULTS_QUEUE"] == {
        "Fn::If": ["Tracking", {"Ref": "ResultsQueue"}, ""]
    }


def test_the_worker_s_variables_and_added_policy_are_written_into_a_valid_template() -> None:
    from hopper.stack import render_template

    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::b/markers/*"}
        ],
    }
    text = render_template({"MARKER_PREFIX": "markers/", "QUOTE": 'say "hi": ü\\'}, policy)
    assert [str(m) for m in lint_all(text)] == []
    rendered = cfn_yaml.loads(text)["Resources"]
    variables = rendered["WorkerFunction"]["Properties"]["Environment"]["Variables"]
    assert variables == {
        "HOPPER_WORKER_OF": {"Ref": "AWS::StackName"},
        "MARKER_PREFIX": "markers/",
        "QUOTE": 'say "hi": ü\\',
    }
    policies = rendered["WorkerRole"]["Properties"]["Policies"]
    assert policies[-1] == {"PolicyName": "worker-policy", "PolicyDocument": policy}
    # Nothing added: the template as `hopper template` prints it.
    assert render_template({}, None) == template_text()
