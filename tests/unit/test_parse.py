import pytest

from hopper.errors import InvalidInput
from hopper.lambda_target import LambdaTarget
from hopper.local import LocalTarget
from hopper.sources import LocalSource, S3Source, parse_source, resume_point
from hopper.targets import parse_target


def test_s3_sources() -> None:
    source = parse_source("s3://my-bucket")
    assert isinstance(source, S3Source)
    assert (source.bucket, source.prefix) == ("my-bucket", "")
    nested = parse_source("s3://my-bucket/data/2024/")
    assert isinstance(nested, S3Source)
    assert nested.prefix == "data/2024/"


def test_prefixes_mode_treats_the_prefix_as_a_folder() -> None:
    source = parse_source("s3://my-bucket/datasets", mode="prefixes")
    assert isinstance(source, S3Source)
    assert source.prefix == "datasets/"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("s3://", "has no bucket"),
        ("s3:///key", "has no bucket"),
        ("s3://Bad_Bucket", "not a valid S3 bucket name"),
        ("s3://ab", "not a valid S3 bucket name"),
        ("gs://bucket/x", "use s3://BUCKET"),
        ("", "source is empty"),
        ("/definitely/not/here", "does not exist"),
    ],
)
def test_malformed_sources(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_source(text)


def test_local_source_accepts_file_urls(tmp_path: object) -> None:
    assert isinstance(parse_source(f"file://{tmp_path}"), LocalSource)


def test_a_file_is_not_a_folder(tmp_path: object) -> None:
    from pathlib import Path

    file = Path(str(tmp_path)) / "f.txt"
    file.write_text("x")
    with pytest.raises(InvalidInput, match="is not a folder"):
        parse_source(str(file))


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("lambda:worker", "worker"),
        ("worker", "worker"),
        ("worker:live", "worker:live"),
        (
            "arn:aws:lambda:us-east-1:123456789012:function:worker",
            "arn:aws:lambda:us-east-1:123456789012:function:worker",
        ),
        (
            "arn:aws:lambda:eu-west-1:123456789012:function:worker:$LATEST",
            "arn:aws:lambda:eu-west-1:123456789012:function:worker:$LATEST",
        ),
    ],
)
def test_lambda_targets(text: str, name: str) -> None:
    target = parse_target(text)
    assert isinstance(target, LambdaTarget)
    assert target.name == name


def test_local_targets() -> None:
    file_target = parse_target("examples/worker.py:handler")
    assert isinstance(file_target, LocalTarget)
    assert file_target.spec.file == "examples/worker.py"
    assert file_target.spec.function == "handler"
    module_target = parse_target("python:pkg.mod:run")
    assert isinstance(module_target, LocalTarget)
    assert (module_target.spec.module, module_target.spec.function) == ("pkg.mod", "run")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("worker.py", "name the function too"),
        ("worker.py:not-a-name", "is not a Python function name"),
        ("python:mod", "use python:MODULE:FUNCTION"),
        ("python:1mod:f", "use python:MODULE:FUNCTION"),
        ("lambda:has space", "is not a Lambda function"),
        ("arn:aws:s3:::bucket", "is not a Lambda function"),
        ("http://x", "is not a Lambda function"),
    ],
)
def test_malformed_targets(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_target(text)


def test_resume_point_skips_a_whole_prefix() -> None:
    assert resume_point(None, "objects") is None
    assert resume_point("a/b", "objects") == "a/b"
    after = resume_point("a/", "prefixes")
    assert after is not None
    assert after > "a/zzzz/deep/key" and after < "a0"
