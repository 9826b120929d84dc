"""Dependencies point one way: api, agent -> tools -> core -> runtimes (interface)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# package -> packages (and third-party libraries) it must never import
FORBIDDEN = {
    "core": {
        "api",
        "tools",
        "agent",
        "evals",
        "fastapi",
        "starlette",
        "langchain",
        "openai",
        "python_on_whales",
        "kubernetes",
        "typer",
        "uvicorn",
    },
    "runtimes": {"core", "api", "tools", "agent", "evals", "fastapi"},
    "tools": {"api", "agent", "evals", "fastapi", "starlette"},
    "agent": {"api"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependencies_point_one_way(package: str) -> None:
    # core/migrations/env.py assembles the one schema from every layer's tables.
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
        if _imports(path) & FORBIDDEN[package] and path.name != "env.py"
    }
    assert offenders == {}


def test_core_only_touches_the_runtime_interface() -> None:
    allowed = {"runtimes.base", "runtimes.registry"}
    used: set[str] = set()
    for path in (ROOT / "core").rglob("*.py"):
        if "migrations" in path.parts:
            continue  # the schema includes the sandbox's table
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("runtimes"):
                used.add(str(node.module))
    assert used <= allowed


@pytest.mark.parametrize("package", ["core", "runtimes", "tools", "agent", "api", "evals"])
def test_generic_package_names_resolve_inside_the_repository(package: str) -> None:
    module = importlib.import_module(package)
    assert Path(module.__file__ or "").resolve().is_relative_to(ROOT)
