"""The stack the version before Scheduler deployed (a CloudWatch Events rule and a Lambda
permission), made from its saved template with today's parameters: what migration tests
update, on moto and on ministack."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

OLD_TEMPLATE = Path(__file__).resolve().parent / "data" / "template_events_rule.yaml"


def create_rule_based_stack(cfn: Any, name: str, parameters: list[dict[str, str]]) -> str:
    """Create stack `name` from the old template, passing those of `parameters` it declares;
    returns the template's text."""
    old = OLD_TEMPLATE.read_text()
    declared = set(re.findall(r"^  (\w+):\n    Type:", old.split("\nResources:")[0], re.M))
    cfn.create_stack(
        StackName=name,
        TemplateBody=old,
        Parameters=[p for p in parameters if p["ParameterKey"] in declared],
        Capabilities=["CAPABILITY_IAM"],
    )
    return old
