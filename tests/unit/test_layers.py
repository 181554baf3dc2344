"""The module graph, read from the source: every import, lazy ones and TYPE_CHECKING ones
included, points down the layers ARCHITECTURE.md draws, so there is no cycle."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "hopper"

# Bottom to top, as in ARCHITECTURE.md. A module imports only modules of lower layers.
LAYERS: list[list[str]] = [
    ["errors"],
    ["items", "retry"],
    ["aws", "event", "threshold", "schedule", "package", "logs"],
    ["config"],
    ["wire", "runstate"],  # the sub-packages' __init__: a docstring each
    ["wire.transport"],
    ["wire.mux", "wire.listing", "wire.partition"],
    ["inventory"],
    ["sources"],
    ["selection", "batching"],
    ["target", "localworker", "spawn"],
    ["local", "lambda_target"],
    ["targets"],
    ["dispatch"],
    ["dispatch_threads", "dispatch_loop"],
    ["summary"],
    ["engine"],
    ["runstate.store"],
    ["runstate.record"],
    ["runstate.lease", "runstate.incremental", "runstate.tracking"],
    ["runstate.run"],
    ["runner"],
    ["handler", "stack"],
    ["status"],
    ["deploy"],
    ["cli"],
    ["__main__"],
]


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts == ("__init__",):
            continue  # the package root: imported by every hopper.x import anyway
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """The hopper modules `path` imports anywhere in its body."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("hopper."):
                    out.add(alias.name.removeprefix("hopper."))
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            assert node.level == 0, f"{path}: relative import"
            if node.module == "hopper" or node.module.startswith("hopper."):
                base = node.module.removeprefix("hopper").removeprefix(".")
                for alias in node.names:
                    child = f"{base}.{alias.name}" if base else alias.name
                    if child in known:
                        out.add(child)  # `from hopper import engine`: a module
                    elif base:
                        out.add(base)  # `from hopper.x import name`
    return out


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found)) for name, path in found.items()}


def test_every_module_has_a_layer() -> None:
    placed = [name for layer in LAYERS for name in layer]
    assert len(placed) == len(set(placed))
    assert sorted(placed) == sorted(modules())


def test_imports_point_down_the_layers() -> None:
    rank = {name: level for level, layer in enumerate(LAYERS) for name in layer}
    upward = [
        f"{name} imports {other}"
        for name, targets in graph().items()
        for other in sorted(targets)
        if rank[other] >= rank[name]
    ]
    assert upward == []


def test_there_is_no_import_cycle() -> None:
    edges = graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for other in sorted(edges[name]):
            if state.get(other) == 1:
                cycles.append([*path[path.index(other) :], other])
            elif other not in state:
                visit(other, [*path, other])
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_only_the_cli_imports_click_or_rich() -> None:
    users = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            roots = []
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                roots = [node.module.split(".")[0]]
            if {"click", "rich"} & set(roots):
                users.append(name)
    assert set(users) == {"cli"}


def test_the_handler_never_reaches_the_cli() -> None:
    edges = graph()
    seen: set[str] = set()
    todo = ["handler"]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(edges[name])
    assert "cli" not in seen and "__main__" not in seen


def test_no_module_shadows_the_standard_library() -> None:
    """Started from inside the package, its folder comes first on sys.path: a module named
    like a standard one (select.py, once) would be imported in its place."""
    names = {path.stem for path in PACKAGE.rglob("*.py")} | {
        path.name for path in PACKAGE.rglob("*") if path.is_dir() and path.name != "__pycache__"
    }
    assert sorted(names & set(sys.stdlib_module_names)) == []
