"""The `shipdeck` command line, run as a real process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from core.db import make_engine
from core.identity.service import authenticate, hash_token
from tests.conftest import WORLD

SHIPDECK = shutil.which("shipdeck", path=str(Path(sys.executable).parent))


def run(db: str, *args: str) -> subprocess.CompletedProcess[str]:
    assert SHIPDECK, "the shipdeck console script is not installed in this environment"
    env = {**os.environ, "SHIPDECK_DATABASE_URL": db}
    return subprocess.run(
        [SHIPDECK, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def test_load_twice_changes_nothing_the_second_time(db: str, tmp_path: Path) -> None:
    world = tmp_path / "world.yaml"
    world.write_text(WORLD)
    first = run(db, "load", str(world))
    assert first.returncode == 0, first.stderr
    assert "project shop" in first.stdout and "target payment/prod" in first.stdout
    second = run(db, "load", str(world))
    assert (second.returncode, second.stdout.strip()) == (0, "nothing changed")


def test_load_refuses_a_bad_file_and_changes_nothing(db: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "projects:\n  - name: shop\n    services: [web]\n    targets:\n"
        "      - {environment: prod, runtime: compose}\n"
    )
    result = run(db, "load", str(bad))
    assert result.returncode == 1
    assert "compose target needs compose_files" in result.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("projects: [\n")
    assert "not valid YAML" in run(db, "load", str(broken)).stderr


def test_a_load_stopped_mid_way_says_what_is_loaded_and_a_rerun_finishes(
    db: str, tmp_path: Path
) -> None:
    world = tmp_path / "world.yaml"
    world.write_text(WORLD)
    assert run(db, "load", str(world)).returncode == 0
    with make_engine(db).begin() as connection:  # the database refuses one project's row
        connection.execute(
            text(
                "CREATE TRIGGER refuse_b BEFORE INSERT ON projects WHEN NEW.name = 'b' "
                "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
            )
        )
    more = tmp_path / "more.yaml"
    more.write_text(
        "projects:\n"
        + "".join(
            f"  - {{name: {p}, services: [web], owners: [{p}-owner], "
            "targets: [{environment: dev, runtime: sandbox}]}\n"
            for p in "abc"
        )
    )
    stopped = run(db, "load", str(more))
    assert stopped.returncode == 1
    assert "project a" in stopped.stdout and "role a-owner on a: none -> approver" in stopped.stdout
    assert "project b" not in stopped.stdout and "project c" not in stopped.stdout
    assert "load again to finish" in stopped.stdout
    assert "the database refused the load" in stopped.stderr and "disk full" in stopped.stderr
    with make_engine(db).begin() as connection:
        connection.execute(text("DROP TRIGGER refuse_b"))
    rerun = run(db, "load", str(more))
    assert rerun.returncode == 0, rerun.stderr
    assert "project b" in rerun.stdout and "project c" in rerun.stdout
    assert "project a" not in rerun.stdout
    verified = run(db, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_users_add_prints_a_working_token_on_its_last_line(db: str, tmp_path: Path) -> None:
    world = tmp_path / "world.yaml"
    world.write_text(WORLD)
    run(db, "load", str(world))
    result = run(db, "users", "add", "zoe", "--role", "approver", "--project", "shop")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("sd_") and " " not in token

    engine = make_engine(db)
    with Session(engine) as session:
        actor = authenticate(session, token)
        stored = {row[0] for row in session.execute(text("SELECT token_hash FROM api_tokens"))}
    engine.dispose()
    assert token not in stored and hash_token(token) in stored  # only the hash is kept
    assert actor is not None and actor.name == "zoe"
    unknown = run(db, "users", "add", "zed", "--role", "viewer", "--project", "nope")
    assert unknown.returncode == 1 and "no project named 'nope'" in unknown.stderr
    bad_role = run(db, "users", "add", "zed", "--role", "king")
    assert bad_role.returncode == 2


def test_db_upgrade_and_audit_verify(db: str, tmp_path: Path) -> None:
    assert run(db, "db", "upgrade").returncode == 0
    world = tmp_path / "world.yaml"
    world.write_text(WORLD)
    run(db, "load", str(world))
    ok = run(db, "audit", "verify")
    assert ok.returncode == 0 and '"ok":true' in ok.stdout.replace(" ", "")
    import sqlite3

    connection = sqlite3.connect(db.removeprefix("sqlite:///"))
    connection.execute("UPDATE audit_events SET actor='mallory' WHERE seq=1")
    connection.commit()
    connection.close()
    broken = run(db, "audit", "verify")
    assert broken.returncode == 1
    assert "broken at event 1" in broken.stderr
