"""Dependencies point one way, checked by import-linter contracts (pyproject.toml).

The contracts are only worth something if they catch violations, so each injected violation
below must break the check on a copy of the repository.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["core", "runtimes", "tools", "agent", "api", "evals"]
LINT = Path(sys.executable).with_name("lint-imports")

# (file to append to, the import line) -> one violation each; lazy imports count too.
VIOLATIONS = [
    ("core/releases/queries.py", "import fastapi"),
    ("core/audit/service.py", "from starlette.requests import Request"),
    ("core/policy.py", "import langchain_core"),
    ("core/flows/apply.py", "def _late() -> None:\n    import openai\n"),
    ("core/targets/service.py", "import python_on_whales"),
    ("core/flows/runner.py", "from runtimes.compose import ComposeAdapter"),
    ("core/identity/service.py", "import kubernetes"),
    ("core/releases/lifecycle.py", "from tools.registry import REGISTRY"),
    ("tools/base.py", "from agent.session import ChatSession"),
    ("runtimes/base.py", "from core.errors import NotFound"),
    ("core/approvals/tickets.py", "from core.flows.views import view"),
    ("core/releases/models.py", "from core.approvals.models import ApprovalTicket"),
    ("core/audit/models.py", "from core.releases.models import Release"),
]


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}  # the copy, not the installed tree
    return subprocess.run(
        [str(LINT), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=60, env=env
    )


def test_the_repository_keeps_every_contract() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


@pytest.mark.parametrize(("path", "line"), VIOLATIONS, ids=[v[1][:40] for v in VIOLATIONS])
def test_each_injected_violation_is_caught(copy: Path, path: str, line: str) -> None:
    file = copy / path
    original = file.read_text()
    file.write_text(original + "\n" + line + "\n")
    try:
        result = _lint(copy)
    finally:
        file.write_text(original)
    assert result.returncode != 0, f"not caught: {path}: {line}\n{result.stdout[-2000:]}"
    assert "BROKEN" in result.stdout


@pytest.mark.parametrize("package", PACKAGES)
def test_generic_package_names_resolve_inside_the_repository(package: str) -> None:
    module = importlib.import_module(package)
    assert Path(module.__file__ or "").resolve().is_relative_to(ROOT)
