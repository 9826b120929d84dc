"""One global grant per user and one global group per name, kept by the database.

A grant or group on every project has project_id NULL, which never collides in a unique
constraint: only the writers' lock kept them single. Migration 0012 merges copies made
before (the strongest role, the oldest group with every member) and adds partial unique
indexes, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from core.migrate import upgrade

BEFORE = "0011_catalog_version"


def _rows(engine: Engine, sql: str) -> list[tuple[object, ...]]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(sql))]


def test_the_migration_merges_global_copies_then_keeps_them_single(fresh: Engine) -> None:
    upgrade(fresh, BEFORE)
    with fresh.begin() as connection:
        for name in ("rita", "sam🚀", "x" * 64):
            connection.execute(
                text("INSERT INTO users (name, created_at) VALUES (:n, CURRENT_TIMESTAMP)"),
                {"n": name},
            )
        rows = connection.execute(text("SELECT name, id FROM users")).all()
        users: dict[str, int] = {str(name): int(user_id) for name, user_id in rows}
        rita, sam, long = users["rita"], users["sam🚀"], users["x" * 64]
        for user, role in [(rita, "viewer"), (rita, "admin"), (rita, "owner"), (sam, "viewer")]:
            connection.execute(
                text("INSERT INTO grants (user_id, project_id, role) VALUES (:u, NULL, :r)"),
                {"u": user, "r": role},
            )
        for _ in range(3):
            connection.execute(text("INSERT INTO groups (name, project_id) VALUES ('sre', NULL)"))
        sre = [g for (g,) in connection.execute(text("SELECT id FROM groups ORDER BY id"))]
        for group, user in [(sre[0], rita), (sre[1], rita), (sre[1], sam), (sre[2], long)]:
            connection.execute(
                text("INSERT INTO group_members (group_id, user_id) VALUES (:g, :u)"),
                {"g": group, "u": user},
            )

    upgrade(fresh, "head")

    grants = _rows(fresh, "SELECT user_id, role FROM grants WHERE project_id IS NULL ORDER BY 1")
    assert grants == [(rita, "admin"), (sam, "viewer")]  # the strongest role stays
    assert _rows(fresh, "SELECT id FROM groups WHERE project_id IS NULL") == [(sre[0],)]
    members = _rows(fresh, f"SELECT user_id FROM group_members WHERE group_id = {sre[0]}")
    assert sorted(int(str(u)) for (u,) in members) == sorted([rita, sam, long])
    with pytest.raises(IntegrityError), fresh.begin() as connection:
        connection.execute(
            text("INSERT INTO grants (user_id, project_id, role) VALUES (:u, NULL, 'viewer')"),
            {"u": sam},
        )
    with pytest.raises(IntegrityError), fresh.begin() as connection:
        connection.execute(text("INSERT INTO groups (name, project_id) VALUES ('sre', NULL)"))
    with fresh.begin() as connection:  # a project's own grants and groups are not touched
        connection.execute(
            text("INSERT INTO projects (name, created_at) VALUES ('shop', CURRENT_TIMESTAMP)")
        )
        shop = connection.execute(text("SELECT id FROM projects")).scalar_one()
        connection.execute(
            text("INSERT INTO grants (user_id, project_id, role) VALUES (:u, :p, 'owner')"),
            {"u": sam, "p": shop},
        )
        connection.execute(
            text("INSERT INTO groups (name, project_id) VALUES ('sre', :p)"), {"p": shop}
        )
