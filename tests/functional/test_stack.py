"""The stack's options: what deploy derives from them before any AWS call."""

from __future__ import annotations

from typing import Any

import pytest

from hopper.errors import InvalidInput
from hopper.stack import DeployConfig


def stack(**kw: Any) -> DeployConfig:
    return DeployConfig(**{"source": "s3://bkt-1/data/", "target": "fn", **kw})


@pytest.mark.parametrize(
    ("options", "seconds"),
    [
        ({"schedule": "rate(15 minutes)"}, 1800),
        # At least five minutes, whatever the rate.
        ({"schedule": "rate(1 minute)"}, 300),
        ({"schedule": "rate(1 hour)", "flexible_window": 10}, 2 * 3600 + 600),
        ({"schedule": "cron(0 3 * * ? *)", "timezone": "UTC"}, 2 * 86400),
        ({"schedule": "rate(3 days)"}, 6 * 86400),
        # Two periods beyond the 7 days one alarm can watch: no such alarm.
        ({"schedule": "rate(4 days)"}, 0),
        ({"schedule": "cron(0 0 1 * ? *)"}, 0),
        ({"schedule": "at(2099-01-01T00:00:00)"}, 0),
        ({"schedule": "rate(15 minutes)", "schedule_enabled": False}, 0),
    ],
)
def test_the_no_run_alarm_watches_two_schedule_periods(
    options: dict[str, Any], seconds: int
) -> None:
    assert stack(**options).run_watch_seconds() == seconds


def test_the_time_zone_is_kept_as_scheduler_takes_it() -> None:
    assert stack(timezone=" America/New_York ").timezone == "America/New_York"
    parameters = {
        p["ParameterKey"]: p["ParameterValue"]
        for p in stack(timezone="Asia/Tokyo", schedule="cron(0 9 * * ? *)").parameters(
            "arn:aws:lambda:us-east-1:123456789012:function:fn", "bkt-1", "k"
        )
    }
    assert parameters["ScheduleTimezone"] == "Asia/Tokyo"
    assert parameters["WorkerArtifactKey"] == "" and parameters["WorkerReservedConcurrency"] == "-1"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"stack_name": "x" * 58, "target": None, "worker": "examples/worker.py:handler"},
         "with --worker it may have at most 57 characters"),
        ({"alarm_email": "a@b.io", "alarm_topic": "arn:aws:sns:us-east-1:123456789012:t"},
         "--alarm-email or --alarm-topic, not both"),
        ({"alarm_topic": "my-topic"}, "is not an SNS topic ARN"),
        ({"schedule_retries": 186}, "--schedule-retries must be between 0 and 185"),
        ({"target": None, "worker": "examples/worker.py:handler",
          "worker_managed_policies": ("ReadOnlyAccess",)}, "is not an IAM policy ARN"),
        ({"target": None, "worker": "examples/worker.py:handler",
          "worker_policy": {"Version": "2012-10-17"}}, "a policy document has a Statement list"),
        ({"target": None, "worker": "examples/worker.py:handler",
          "worker_env": {"K": "v" * 5000}}, "Lambda allows 4 KB in all"),
    ],
)  # fmt: skip
def test_stack_options_that_cannot_deploy_are_bad_input(
    options: dict[str, Any], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    with pytest.raises(InvalidInput) as caught:
        stack(**options)
    assert message in str(caught.value)
