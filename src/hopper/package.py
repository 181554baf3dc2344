"""Code packages for Lambda: hopper's own core, and the user's worker from the file that runs
locally, with its dependencies as binary wheels for the Lambda platform.

Both are zips that are byte-for-byte the same for the same inputs (sorted names, fixed times
and modes), so their sha256 names them in S3 and an unchanged package is not uploaded again.
Nothing here calls AWS.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.machinery
import io
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hopper.errors import DeployError, InvalidInput

# What Lambda accepts: 250 MB unzipped (through S3, as hopper uploads); a direct upload of
# the zip itself would stop at 50 MB.
MAX_UNZIPPED = 250 * 1024 * 1024
DIRECT_UPLOAD_LIMIT = 50 * 1024 * 1024
# The worker's platform: the template's Runtime and Architectures. AL2023 has glibc 2.34.
PYTHON_VERSION = "3.12"
PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64")
_NOT_SHIPPED = frozenset({"cli.py", "__main__.py", "template.yaml"})
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_SKIPPED_PARTS = frozenset({"__pycache__", ".git", ".mypy_cache", ".pytest_cache"})


@dataclass(frozen=True)
class Artifact:
    data: bytes
    digest: str
    unzipped: int
    files: int

    def describe(self) -> str:
        files = f"{self.files} file" + ("" if self.files == 1 else "s")
        return f"{_size(len(self.data))}, {files}, {_size(self.unzipped)} unzipped"


def _zip(entries: Iterable[tuple[str, bytes]]) -> Artifact:
    buffer = io.BytesIO()
    unzipped = files = 0
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data, compresslevel=9)
            unzipped += len(data)
            files += 1
    data = buffer.getvalue()
    return Artifact(data, hashlib.sha256(data).hexdigest(), unzipped, files)


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB" if n >= 1024 * 1024 else f"{n / 1024:.1f} KB"


def build_artifact(package_dir: Path | None = None) -> tuple[bytes, str]:
    """A zip of hopper's core, the same bytes for the same sources; and its sha256. The CLI
    (click, rich) never ships to Lambda."""
    root = package_dir or Path(__file__).resolve().parent
    # Sub-packages too (wire/, runstate/).
    entries = [
        (f"hopper/{path.relative_to(root).as_posix()}", path.read_bytes())
        for path in root.rglob("*.py")
        if path.relative_to(root).as_posix() not in _NOT_SHIPPED
    ]
    artifact = _zip(entries)
    return artifact.data, artifact.digest


# ----------------------------------------------------------------------------- the worker


@dataclass(frozen=True)
class WorkerSource:
    """The worker as named on the command line: its files (name in the zip, path) and the
    Lambda handler that imports it."""

    text: str
    handler: str
    files: tuple[tuple[str, Path], ...]

    @property
    def modules(self) -> frozenset[str]:
        """The top-level names its files take in the zip."""
        return frozenset(name.split("/")[0].removesuffix(".py") for name, _ in self.files)


def parse_worker(text: str, *, cwd: Path | None = None) -> WorkerSource:
    """`FILE.py:FUNCTION` or `python:MODULE:FUNCTION`, as local mode takes them; checks that
    the file exists and defines FUNCTION, and collects the modules beside it that it imports
    (local mode puts the file's folder on sys.path, as Lambda's task root does)."""
    base = cwd or Path.cwd()
    text = text.strip()
    if text.startswith("python:"):
        module, sep, function = text[len("python:") :].rpartition(":")
        if not sep or not _MODULE.match(module) or not _IDENT.match(function):
            raise InvalidInput(f"--worker {text!r}: use python:MODULE:FUNCTION")
        return _module_worker(text, module, function, base)
    file, sep, function = text.rpartition(":")
    if not sep or not file.endswith(".py"):
        raise InvalidInput(
            f"--worker {text!r}: use FILE.py:FUNCTION or python:MODULE:FUNCTION "
            "(--target names an existing Lambda function)"
        )
    if not _IDENT.match(function):
        raise InvalidInput(f"--worker {text!r}: {function!r} is not a Python function name")
    path = (base / file).resolve()
    if not path.is_file():
        raise InvalidInput(f"--worker {text!r}: {file} does not exist")
    if not _IDENT.match(path.stem):
        raise InvalidInput(
            f"--worker {text!r}: Lambda imports {path.name} as a module, and "
            f"{path.stem!r} is not a Python name",
            hint=f"rename it, e.g. to {re.sub(r'[^A-Za-z0-9_]', '_', path.stem)}.py",
        )
    _check_defines(path, function, text)
    files = {path.name: path, **_siblings(path)}
    return WorkerSource(text, f"{path.stem}.{function}", tuple(sorted(files.items())))


def _module_worker(text: str, module: str, function: str, base: Path) -> WorkerSource:
    top = module.split(".")[0]
    # Where local mode finds it: the current folder first, then sys.path.
    spec = importlib.machinery.PathFinder.find_spec(top, [str(base), *sys.path])
    if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
        raise InvalidInput(f"--worker {text!r}: no module named {top!r} here or on sys.path")
    origin = Path(spec.origin)
    files: dict[str, Path] = {}
    if spec.submodule_search_locations:
        package = origin.parent
        files.update(
            (f"{top}/{path.relative_to(package).as_posix()}", path) for path in _tree(package)
        )
        inner = package.joinpath(*module.split(".")[1:])
        source = inner / "__init__.py" if inner.is_dir() else inner.with_suffix(".py")
    else:
        if "." in module:
            raise InvalidInput(f"--worker {text!r}: {top} is a module, not a package")
        files[origin.name] = origin
        files.update(_siblings(origin))
        source = origin
    if not source.is_file():
        raise InvalidInput(f"--worker {text!r}: no module {module} in {origin.parent}")
    _check_defines(source, function, text)
    return WorkerSource(text, f"{module}.{function}", tuple(sorted(files.items())))


def _check_defines(path: Path, function: str, text: str) -> None:
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as exc:
        raise InvalidInput(
            f"--worker {text!r}: SyntaxError in {path.name} at line {exc.lineno}: {exc.msg}"
        ) from None
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    if function not in names:
        raise InvalidInput(f"--worker {text!r}: {path.name} defines no {function!r}")


def _imports(path: Path) -> set[str]:
    """The top-level names a file imports, absolute imports only."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError:
        return set()
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _siblings(path: Path) -> dict[str, Path]:
    """The modules and packages beside `path` that it imports, and those they import."""
    folder = path.parent
    found: dict[str, Path] = {}
    pending = [path]
    seen: set[Path] = set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        for name in sorted(_imports(current)):
            module, package = folder / f"{name}.py", folder / name
            if module.is_file() and module != path:
                found[module.name] = module
                pending.append(module)
            elif (package / "__init__.py").is_file():
                for inner in _tree(package):
                    found[f"{name}/{inner.relative_to(package).as_posix()}"] = inner
                    if inner.suffix == ".py":
                        pending.append(inner)
    return found


def _tree(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        parts = set(path.relative_to(root).parts)
        if path.is_file() and not parts & _SKIPPED_PARTS and path.suffix not in (".pyc", ".pyo"):
            yield path


def worker_artifact(worker: WorkerSource, requirements: Path | None = None) -> Artifact:
    """The worker's zip: its files at the root, as Lambda's task root, and its dependencies
    installed beside them as binary wheels for Python 3.12 on arm64 Linux."""
    entries = {name: path.read_bytes() for name, path in worker.files}
    if requirements is not None:
        with tempfile.TemporaryDirectory(prefix="hopper-wheels-") as folder:
            target = Path(folder)
            _install(requirements, target)
            for path in _tree(target):
                name = path.relative_to(target).as_posix()
                if name.split("/")[0] == "bin":
                    continue  # console scripts, with this machine's interpreter in them
                top = name.split("/")[0].removesuffix(".py")
                if top in worker.modules:
                    raise InvalidInput(
                        f"--requirements {requirements}: a dependency installs {top!r}, "
                        "which is also the worker's own module",
                        hint="rename the worker's file or module",
                    )
                entries[name] = path.read_bytes()
    artifact = _zip(entries.items())
    if artifact.unzipped > MAX_UNZIPPED:
        raise InvalidInput(
            f"the worker's package is {_size(artifact.unzipped)} unzipped, over Lambda's "
            f"limit of {_size(MAX_UNZIPPED)}",
            hint="drop dependencies the worker does not need, or build a container image",
        )
    return artifact


_NO_WHEEL = re.compile(r"No matching distribution found for ([^\s;]+)")


def _install(requirements: Path, target: Path) -> None:
    if not requirements.is_file():
        raise InvalidInput(f"--requirements {requirements}: no such file")
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--no-compile", "--target", str(target), "--implementation", "cp",
        "--python-version", PYTHON_VERSION, "--only-binary=:all:",
        *(argument for platform in PLATFORMS for argument in ("--platform", platform)),
        "--requirement", str(requirements),
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    except subprocess.TimeoutExpired:
        raise DeployError(f"--requirements {requirements}: pip took over 15 minutes") from None
    if done.returncode == 0:
        return
    missing = _NO_WHEEL.search(done.stderr)
    if missing:
        raise InvalidInput(
            f"--requirements {requirements}: {missing.group(1)} has no wheel for Lambda "
            f"(Python {PYTHON_VERSION}, arm64, manylinux); hopper installs binary wheels only",
            hint="choose a version that publishes an aarch64 wheel, or a pure-Python package",
        )
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
    last = errors[-1] if errors else (done.stderr.strip().splitlines() or ["no output"])[-1]
    raise DeployError(f"--requirements {requirements}: pip failed: {last}")
