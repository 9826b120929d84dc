"""Legacy release rows come in mapped, audited and usable like native ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.audit.service import verify
from core.flows.legacy import import_legacy
from core.permissions import SYSTEM
from tests.cli.test_cli import run
from tests.conftest import WORLD, World
from tests.support.calls import call
from tests.support.races import race


def _row(legacy_id: str, state: str, **extra: Any) -> str:
    row = {
        "id": legacy_id,
        "project": "shop",
        "environment": "production",  # older tools spelled it out
        "state": state,
        "services": {"web": {"image": "shop/web:1.3.0", "replicas": 2}},
        "actor": "old-deployer",
        "created_at": "2025-03-01T10:00:00+00:00",
        **extra,
    }
    return json.dumps(row)


def _import(world: World, lines: list[str], *, write: bool = True, skip: bool = False) -> Any:
    with world.services.sessions() as session:
        return import_legacy(session, actor=SYSTEM, lines=lines, write=write, skip_ambiguous=skip)


def test_old_states_come_in_mapped_and_audited(world: World) -> None:
    report = _import(
        world,
        [_row("d-1", "success"), _row("d-2", "pending"), _row("d-3", "error", reason="💥" * 3000)],
    )
    assert [(r.legacy_id, r.state) for r in report.imported] == [
        ("d-1", "applied"),
        ("d-2", "pending_approval"),
        ("d-3", "failed"),
    ]
    applied = call(world, "admin", "list_releases", project="shop", state="applied").items
    assert [r.id for r in applied] == [report.imported[0].release_id]
    assert applied[0].environment == "prod" and applied[0].channel == "import"
    inbox = call(world, "bob", "list_approvals", mine=True).items
    assert report.imported[1].release_id in [i.release_id for i in inbox]
    timeline = call(world, "admin", "release_timeline", release_id=report.imported[0].release_id)
    event = [e for e in timeline.entries if e.kind == "audit"][0]
    assert (event.action, event.data["legacy_id"], event.data["legacy_state"]) == (
        "import",
        "d-1",
        "success",
    )
    assert _import(world, [_row("d-1", "success")]).imported == []  # never twice


def test_a_rollback_can_go_back_to_an_imported_revision(world: World) -> None:
    report = _import(world, [_row("d-7", "done")])
    back = call(
        world,
        "alice",
        "rollback_release",
        project="shop",
        environment="prod",
        to_release_id=report.imported[0].release_id,
    )
    assert back.preview.desired["web"].image == "shop/web:1.3.0"


def test_ambiguous_rows_are_reported_not_guessed(world: World) -> None:
    lines = [
        _row("d-1", "timeout"),  # timed out waiting, or while deploying? the row does not say
        _row("d-2", "timeout", started_at="2025-03-01T10:05:00+00:00"),  # it had started
        _row("d-3", "queued", approved_by="bob"),
    ]
    report = _import(world, lines)
    assert [r.legacy_id for r in report.ambiguous] == ["d-1"]
    assert report.imported and all(r.release_id is None for r in report.imported)
    assert call(world, "admin", "list_releases").items == []  # nothing written
    report = _import(world, lines, skip=True)
    assert [(r.legacy_id, r.state) for r in report.imported] == [
        ("d-2", "failed"),
        ("d-3", "approved"),
    ]


def test_invalid_rows_block_the_import(world: World) -> None:
    report = _import(
        world,
        [_row("ok", "success"), "{not json", _row("x", "success", project="nope"), "[1]"],
    )
    assert [r.line for r in report.invalid] == [2, 3, 4]
    assert call(world, "admin", "list_releases").items == []


def test_the_cli_checks_then_imports(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'legacy.db'}"
    world = tmp_path / "world.yaml"
    world.write_text(WORLD)
    assert run(db, "load", str(world)).returncode == 0
    rows = tmp_path / "old.jsonl"
    rows.write_text("\n".join([_row("a", "success"), _row("b", "timeout")]) + "\n")
    refused = run(db, "import", "legacy", str(rows))
    assert refused.returncode == 1 and "1 ambiguous" in refused.stderr
    done = run(db, "import", "legacy", str(rows), "--skip-ambiguous")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["imported"][0]["release_id"] == "R-1"


def test_imported_states_are_explained_by_their_import_event(world: World) -> None:
    _import(world, [_row("d-1", "success"), _row("d-2", "error"), _row("d-3", "pending")])
    assert call(world, "admin", "verify_audit").ok


def test_two_imports_of_one_file_at_once_import_each_row_once(world: World) -> None:
    # Both read "not imported yet" before either writes (tests/support/races.py): one used to
    # fail on the new user's name, or, with the user there, both imported every row.
    lines = [_row("d-1", "success"), _row("d-3", "error", reason="💥" * 3000)]

    results = race(world.services, "users", *[lambda: _import(world, lines)] * 2)

    assert [repr(r) for r in results if isinstance(r, BaseException)] == []
    imported = sorted(e.legacy_id for r in results for e in r.imported)
    assert imported == ["d-1", "d-3"]  # each by one of the two imports
    releases = call(world, "admin", "list_releases", project="shop").items
    assert len(releases) == 2
    with world.services.sessions() as session:
        assert verify(session).ok
