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


def test_no_managed_policies_and_no_wildcard_actions(template: Any) -> None:
    role = template["Resources"]["HopperRole"]["Properties"]
    assert "ManagedPolicyArns" not in role
    for policy in role["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            actions = (
                statement["Action"]
                if isinstance(statement["Action"], list)
                else [statement["Action"]]
            )
            assert all("*" not in action for action in actions)
            assert statement["Resource"] != "*"


def test_function_is_current_arm64_json_logging_and_may_recurse(template: Any) -> None:
    function = template["Resources"]["HopperFunction"]["Properties"]
    runtime = function["Runtime"]
    assert runtime.startswith("python3.") and int(runtime.split(".")[1]) >= 12
    assert function["Architectures"] == ["arm64"]
    assert function["RecursiveLoop"] == "Allow"
    assert function["LoggingConfig"]["LogFormat"] == "JSON"
    assert function["Handler"] == "hopper.handler.handler"
    assert template["Resources"]["HopperLogGroup"]["Properties"]["RetentionInDays"] == {
        "Ref": "LogRetentionDays"
    }


def test_schedule_permission_names_its_principal_and_source(template: Any) -> None:
    permission = template["Resources"]["HopperSchedulePermission"]["Properties"]
    assert permission["Principal"] == "events.amazonaws.com"
    assert permission["SourceArn"] == {"Fn::GetAtt": ["HopperSchedule", "Arn"]}


def test_parameters_and_outputs(template: Any) -> None:
    assert set(template["Parameters"]) >= {
        "SourceBucket", "SourcePrefix", "TargetFunctionArn", "ScheduleExpression", "ScheduleEnabled", "Mode",
        "BatchSize", "Concurrency", "InvocationType", "MemorySize", "Timeout",
    }  # fmt: skip
    assert set(template["Outputs"]) >= {"FunctionName", "FunctionArn", "RuleArn", "RoleArn"}


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
    assert allow["Principal"] == {"AWS": {"Ref": "WorkerRoleArn"}}
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
    statements = [
        collect,
        *resources["HopperRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"],
    ]
    assert sorted(collect["Action"]) == [
        "sqs:ChangeMessageVisibility",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ReceiveMessage",
    ]
    assert collect["Resource"] == {"Fn::GetAtt": ["ResultsQueue", "Arn"]}
    sqs_anywhere = [s["Sid"] for s in statements if any("sqs:" in a for a in s["Action"])]
    assert sqs_anywhere == ["CollectTheWorkersOutcomes"]
    environment = resources["HopperFunction"]["Properties"]["Environment"]["Variables"]
    assert environment["HOPPER_RESULTS_QUEUE"] == {
        "Fn::If": ["Tracking", {"Ref": "ResultsQueue"}, ""]
    }
