"""The deployed worker's package: the same file that runs locally, what it imports from beside
it, and its dependencies as wheels for Lambda's platform, installed by a real pip from a
wheelhouse the test builds (no network)."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from hopper.errors import InvalidInput
from hopper.package import parse_worker, worker_artifact

REPO = Path(__file__).resolve().parents[2]


def names(data: bytes) -> list[str]:
    return zipfile.ZipFile(io.BytesIO(data)).namelist()


def test_the_example_worker_is_one_file_with_its_handler() -> None:
    source = parse_worker("examples/worker.py:handler", cwd=REPO)
    assert source.handler == "worker.handler"
    first, again = worker_artifact(source), worker_artifact(source)
    assert first.data == again.data and first.digest == again.digest
    assert names(first.data) == ["worker.py"]
    assert (
        zipfile.ZipFile(io.BytesIO(first.data)).read("worker.py")
        == (REPO / "examples" / "worker.py").read_bytes()
    )
    assert first.digest == hashlib.sha256(first.data).hexdigest()


def test_modules_beside_the_worker_that_it_imports_go_with_it(tmp_path: Path) -> None:
    (tmp_path / "job.py").write_text(
        "import json\nimport helpers\nfrom shapes.square import area\n\n"
        "def run(event, context):\n    return helpers.twice(area(2))\n"
    )
    (tmp_path / "helpers.py").write_text("import units\n\ndef twice(x):\n    return 2 * x\n")
    (tmp_path / "units.py").write_text("METRES = 1\n")
    (tmp_path / "shapes").mkdir()
    (tmp_path / "shapes" / "__init__.py").write_text("")
    (tmp_path / "shapes" / "square.py").write_text("def area(x):\n    return x * x\n")
    (tmp_path / "shapes" / "__pycache__").mkdir()
    (tmp_path / "shapes" / "__pycache__" / "square.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "unrelated.py").write_text("raise SystemExit\n")
    source = parse_worker("job.py:run", cwd=tmp_path)
    assert source.handler == "job.run"
    assert names(worker_artifact(source).data) == [
        "helpers.py", "job.py", "shapes/__init__.py", "shapes/square.py", "units.py",
    ]  # fmt: skip


def test_a_module_worker_ships_its_package(tmp_path: Path) -> None:
    package = tmp_path / "etl"
    (package / "steps").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "steps" / "__init__.py").write_text("")
    (package / "steps" / "load.py").write_text("def handler(event, context):\n    return 1\n")
    source = parse_worker("python:etl.steps.load:handler", cwd=tmp_path)
    assert source.handler == "etl.steps.load.handler"
    assert names(worker_artifact(source).data) == [
        "etl/__init__.py", "etl/steps/__init__.py", "etl/steps/load.py",
    ]  # fmt: skip
    with pytest.raises(InvalidInput, match=r"load\.py defines no 'run'"):
        parse_worker("python:etl.steps.load:run", cwd=tmp_path)
    with pytest.raises(InvalidInput, match="no module named 'etl_typo'"):
        parse_worker("python:etl_typo:handler", cwd=tmp_path)


@pytest.mark.parametrize(
    ("text", "files", "message"),
    [
        ("job.py", {}, "use FILE.py:FUNCTION or python:MODULE:FUNCTION"),
        ("job.py:run", {}, "job.py does not exist"),
        ("my-job.py:run", {"my-job.py": "def run(e, c): pass\n"}, "rename it, e.g. to my_job.py"),
        ("job.py:run", {"job.py": "def run(e, c)\n"}, "SyntaxError in job.py at line 1"),
        ("job.py:2run", {"job.py": ""}, "'2run' is not a Python function name"),
    ],
)
def test_a_worker_that_cannot_deploy_is_bad_input(
    tmp_path: Path, text: str, files: dict[str, str], message: str
) -> None:
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    with pytest.raises(InvalidInput) as caught:
        parse_worker(text, cwd=tmp_path)
    assert message in str(caught.value)


def wheel(folder: Path, name: str, tag: str, files: dict[str, str]) -> Path:
    """A minimal, valid wheel: the files, METADATA, WHEEL and a RECORD of their hashes."""
    info = f"{name}-1.0.dist-info"
    contents = {
        **files,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n",
    }
    record = []
    for path, text in contents.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    contents[f"{info}/RECORD"] = "\n".join(record) + "\n"
    wheel_path = folder / f"{name}-1.0-{tag}.whl"
    with zipfile.ZipFile(wheel_path, "w") as archive:
        for member, text in contents.items():
            archive.writestr(member, text)
    return wheel_path


@pytest.fixture
def wheelhouse(tmp_path: Path) -> Path:
    house = tmp_path / "wheels"
    house.mkdir()
    wheel(house, "tinydep", "py3-none-any", {"tinydep/__init__.py": "VALUE = 42\n"})
    wheel(house, "fastlib", "cp312-cp312-manylinux_2_28_aarch64", {"fastlib/__init__.py": ""})
    wheel(house, "intelonly", "cp312-cp312-manylinux2014_x86_64", {"intelonly/__init__.py": ""})
    wheel(house, "worker", "py3-none-any", {"worker.py": "# a dependency named like the worker\n"})
    return house


def requirements(tmp_path: Path, house: Path, *names: str) -> Path:
    path = tmp_path / "requirements.txt"
    path.write_text("\n".join(["--no-index", f"--find-links {house}", *names]) + "\n")
    return path


@pytest.mark.slow
def test_requirements_install_as_wheels_for_lambda_beside_the_worker(
    tmp_path: Path, wheelhouse: Path
) -> None:
    source = parse_worker("examples/worker.py:handler", cwd=REPO)
    needs = requirements(tmp_path, wheelhouse, "tinydep==1.0", "fastlib==1.0")
    first = worker_artifact(source, needs)
    listed = names(first.data)
    assert {"worker.py", "tinydep/__init__.py", "fastlib/__init__.py"} <= set(listed)
    assert "tinydep-1.0.dist-info/METADATA" in listed
    assert not [name for name in listed if name.endswith(".pyc") or name.startswith("bin/")]
    # The same inputs make the same bytes, so an unchanged package is not uploaded again.
    assert worker_artifact(source, needs).digest == first.digest


@pytest.mark.slow
@pytest.mark.parametrize(
    ("wanted", "message"),
    [
        ("intelonly==1.0", "intelonly==1.0 has no wheel for Lambda (Python 3.12, arm64"),
        ("absent==1.0", "absent==1.0 has no wheel for Lambda"),
        ("worker==1.0", "a dependency installs 'worker', which is also the worker's own module"),
    ],
)
def test_a_dependency_lambda_cannot_run_is_refused_in_one_line(
    tmp_path: Path, wheelhouse: Path, wanted: str, message: str
) -> None:
    source = parse_worker("examples/worker.py:handler", cwd=REPO)
    with pytest.raises(InvalidInput) as caught:
        worker_artifact(source, requirements(tmp_path, wheelhouse, wanted))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_package_over_lambdas_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("hopper.package.MAX_UNZIPPED", 1000)
    source = parse_worker("examples/worker.py:handler", cwd=REPO)
    with pytest.raises(InvalidInput, match=r"unzipped, over Lambda's limit"):
        worker_artifact(source)
