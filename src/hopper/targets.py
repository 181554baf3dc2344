"""Which target a text names: a Lambda function or a local Python function.

`lambda:NAME`, NAME, an ARN: hopper.lambda_target. `FILE.py:FUNC`, `python:MODULE:FUNC`:
hopper.local, imported only then, so the Lambda handler never loads local mode.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hopper.errors import InvalidInput
from hopper.lambda_target import LambdaTarget

if TYPE_CHECKING:
    from hopper.local import LocalTarget


_FUNCTION_NAME = r"[A-Za-z0-9_-]{1,140}"
_BARE_RE = re.compile(rf"^{_FUNCTION_NAME}(:(\$LATEST|[A-Za-z0-9_-]{{1,128}}))?$")
_ARN_RE = re.compile(
    rf"^arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]+:\d{{12}}:function:{_FUNCTION_NAME}"
    r"(:(\$LATEST|[A-Za-z0-9_-]{1,128}))?$"
)
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def parse_target(
    text: str,
    *,
    invocation_type: str = "event",
    concurrency: int = 16,
    timeout: float = 60.0,
    memory: int = 128,
    session: Any = None,
    lambda_client: Any = None,
    transport_name: str = "auto",
) -> LambdaTarget | LocalTarget:
    """`lambda:NAME`, NAME, an ARN, `FILE.py:FUNC` or `python:MODULE:FUNC`.

    `session` is a boto3 Session or a botocore Session; neither is used before prepare().
    """
    text = text.strip()
    if text.startswith("python:"):
        from hopper.local import LocalTarget
        from hopper.localworker import WorkerSpec

        module, sep, function = text[len("python:") :].rpartition(":")
        if not sep or not _MODULE_RE.match(module) or not _IDENT_RE.match(function):
            raise InvalidInput(f"target {text!r}: use python:MODULE:FUNCTION")
        spec = WorkerSpec(function=function, module=module, timeout=timeout, memory=memory)
        return LocalTarget(spec, processes=concurrency)
    file, sep, function = text.rpartition(":")
    if sep and file.endswith(".py"):
        from hopper.local import LocalTarget
        from hopper.localworker import WorkerSpec

        if not _IDENT_RE.match(function):
            raise InvalidInput(f"target {text!r}: {function!r} is not a Python function name")
        spec = WorkerSpec(function=function, file=file, timeout=timeout, memory=memory)
        return LocalTarget(spec, processes=concurrency)
    if text.endswith(".py"):
        raise InvalidInput(f"target {text!r}: name the function too, as FILE.py:FUNCTION")
    if _BARE_RE.match(text) and ":" not in text and Path(f"{text}.py").is_file():
        # A worker file beside us, named without .py: not the Lambda function it would mean.
        raise InvalidInput(
            f"target {text!r} names a Lambda function, and there is a {text}.py here",
            hint=f"did you mean {text}.py:FUNCTION? (lambda:{text} for the function)",
        )
    name = text[len("lambda:") :] if text.startswith("lambda:") else text
    if not (_BARE_RE.match(name) or _ARN_RE.match(name)):
        raise InvalidInput(
            f"target {text!r} is not a Lambda function (lambda:NAME, NAME or ARN) "
            "nor a local worker (FILE.py:FUNCTION or python:MODULE:FUNCTION)"
        )
    return LambdaTarget(
        name,
        invocation_type=invocation_type,
        session=session,
        lambda_client=lambda_client,
        max_pool_connections=concurrency,
        transport_name=transport_name,
    )
