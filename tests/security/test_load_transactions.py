"""`shipdeck load` commits per part (global, then each project): writers get in between, and
a failure mid-way leaves every part before it loaded and audited, the rest untouched.

The failure is made at the database, as a full disk or a lost connection would make it: a
trigger refuses one project's row.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from benchmarks.declaration_load import big_declaration, measure
from core.audit.models import AuditEvent
from core.identity.models import User
from core.permissions import SYSTEM
from core.targets.models import Project
from core.targets.service import load_declaration, parse_declaration
from tests.conftest import World
from tests.support.calls import call

PROJECTS = 10
BROKEN = "bulk5"


def test_a_writer_gets_in_while_a_big_load_runs(world: World) -> None:
    result = measure(world, projects=40, most_writes=4)
    # One transaction made the writer wait for the whole load: nothing finished during it.
    assert result.during >= 2, result
    assert result.longest < 2.0, result  # benchmarks/declaration_load: 0.2-0.8 s at 200


def _refuse(world: World, project: str) -> None:
    """Make the database refuse the row of `project`."""
    with world.services.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                text(
                    "CREATE FUNCTION refuse_project() RETURNS trigger AS $$ BEGIN "
                    f"IF NEW.name = '{project}' THEN RAISE EXCEPTION 'disk full'; END IF; "
                    "RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            connection.execute(
                text(
                    "CREATE TRIGGER refuse_project BEFORE INSERT ON projects "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_project()"
                )
            )
        else:
            connection.execute(
                text(
                    "CREATE TRIGGER refuse_project BEFORE INSERT ON projects "
                    f"WHEN NEW.name = '{project}' BEGIN SELECT RAISE(ABORT, 'disk full'); END"
                )
            )


def _repair(world: World) -> None:
    with world.services.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("DROP TRIGGER IF EXISTS refuse_project ON projects"))
            connection.execute(text("DROP FUNCTION IF EXISTS refuse_project()"))
        else:
            connection.execute(text("DROP TRIGGER IF EXISTS refuse_project"))


@pytest.fixture
def broken_project(world: World) -> Iterator[str]:
    """The database refuses the row of project `bulk5` until repaired."""
    _refuse(world, BROKEN)
    try:
        yield BROKEN
    finally:
        _repair(world)


def _load(world: World) -> list[str]:
    with world.services.sessions() as session:
        result = load_declaration(
            session, actor=SYSTEM, declaration=parse_declaration(big_declaration(PROJECTS))
        )
    return list(result["changed"])


def _state(world: World) -> tuple[list[str], list[str], list[tuple[str, str | None]]]:
    """(bulk projects, bulk users, (action, project) of the load's audit events)."""
    with world.services.sessions() as session:
        projects = session.scalars(
            select(Project.name).where(Project.name.like("bulk%")).order_by(Project.id)
        ).all()
        users = session.scalars(
            select(User.name).where(User.name.like("bulk%")).order_by(User.name)
        ).all()
        events = session.execute(
            select(AuditEvent.action, AuditEvent.project)
            .where(AuditEvent.project.like("bulk%"))
            .order_by(AuditEvent.seq)
        ).all()
    return list(projects), list(users), [(a, p) for a, p in events]


def test_a_failure_mid_way_leaves_the_parts_before_it_loaded_and_audited(
    world: World, broken_project: str
) -> None:
    with pytest.raises(DBAPIError):
        _load(world)
    projects, users, events = _state(world)
    loaded = [f"bulk{i}" for i in range(5)]
    assert projects == loaded  # bulk5 and everything after it: not a row
    assert all(not u.endswith(("5", "6", "7", "8", "9")) for u in users), users
    # Each loaded project's grants, groups and policies are on record, and nothing else is.
    assert {p for _, p in events} == set(loaded)
    assert [p for a, p in events if a == "declaration_loaded"] == loaded
    assert {a for a, _ in events} == {
        "declaration_loaded",
        "grant_changed",
        "group_changed",
        "policies_changed",
    }
    verification = call(world, "admin", "verify_audit")
    assert verification.ok, verification.reason
    # Loading the same file again adds what is missing, and only that.
    _repair(world)
    again = _load(world)
    assert f"project {BROKEN}" in again and not any("bulk4" in line for line in again)
    projects, _, events = _state(world)
    assert projects == [f"bulk{i}" for i in range(PROJECTS)]
    assert [p for a, p in events if a == "declaration_loaded"] == projects
    assert _load(world) == []  # and a third time changes nothing
    assert call(world, "admin", "verify_audit").ok
