"""The audit commands as an operator runs them, on a SQLite file.

The missing-database check runs the real console script; the round trip runs the same typer
app in-process (a dozen process start-ups would cost a minute on a busy machine).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from api.cli import app
from core.config import get_settings
from tests.conftest import WORLD

SHIPDECK = shutil.which("shipdeck", path=str(Path(sys.executable).parent))


def run(db: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    assert SHIPDECK, "the shipdeck console script is not installed in this environment"
    environment = {**os.environ, "SHIPDECK_DATABASE_URL": db, **(env or {})}
    environment.pop("SHIPDECK_AUDIT_KEY", None)
    environment.pop("SHIPDECK_DATA_DIR", None)
    return subprocess.run(
        [SHIPDECK, *args], env=environment, capture_output=True, text=True, timeout=120, check=False
    )


def test_verify_of_a_missing_database_fails_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "shipdeck.db"
    result = run(f"sqlite:///{missing}", "audit", "verify")
    assert result.returncode == 1
    assert "does not exist" in result.stderr
    assert not missing.parent.exists()


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Result]]:
    monkeypatch.setenv("SHIPDECK_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.delenv("SHIPDECK_AUDIT_KEY", raising=False)
    monkeypatch.delenv("SHIPDECK_DATA_DIR", raising=False)
    get_settings.cache_clear()
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args))

    yield invoke
    get_settings.cache_clear()


def test_checkpoint_export_rotate_archive_round_trip(
    tmp_path: Path, cli: Callable[..., Result]
) -> None:
    world = tmp_path / "world.yaml"
    world.write_text(WORLD)
    loaded = cli("load", str(world))
    assert loaded.exit_code == 0, loaded.output
    assert "role carol on all projects: none -> approver" in loaded.output
    cp_file = tmp_path / "cp.json"
    made = cli("audit", "checkpoint", "--out", str(cp_file))
    assert made.exit_code == 0, made.output
    cp = json.loads(cp_file.read_text())
    assert set(cp) == {"seq", "head_hash", "at", "key_id", "signature"} and cp["seq"] >= 2

    rotated = cli("audit", "rotate-key")
    assert rotated.exit_code == 0, rotated.output
    keys = json.loads((tmp_path / "audit-keys.json").read_text())["keys"]
    assert len(keys) == 2
    printed = rotated.output + made.output + loaded.output
    assert not any(secret in printed for secret in keys.values())  # ids only, never keys

    assert cli("audit", "verify", "--checkpoint", str(cp_file)).exit_code == 0
    export = tmp_path / "export.jsonl"
    assert cli("audit", "export", "--format", "jsonl", "--out", str(export)).exit_code == 0
    ok = cli("audit", "verify", "--file", str(export), "--checkpoint", str(cp_file))
    assert ok.exit_code == 0, ok.output
    export.write_text(export.read_text().replace('"actor":"system"', '"actor":"root"', 1))
    assert cli("audit", "verify", "--file", str(export)).exit_code == 1

    archive = cli("audit", "archive", "--before", "2999-01-01", "--dir", str(tmp_path / "a"))
    assert archive.exit_code == 0, archive.output
    segment = next((tmp_path / "a").glob("*.jsonl"))
    seg_cp = next((tmp_path / "a").glob("*.checkpoint.json"))
    assert cli("audit", "verify", "--checkpoint", str(cp_file)).exit_code == 0
    alone = cli("audit", "verify", "--file", str(segment), "--checkpoint", str(seg_cp))
    assert alone.exit_code == 0, alone.output
