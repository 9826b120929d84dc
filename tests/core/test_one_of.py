"""`OneOf`: `column IN (a list)`, bound on PostgreSQL as one array (`= ANY`), on both databases.

A hundred ids are one parameter there, so the statement's text is the same for any count and
psycopg prepares it once; it must still mean exactly what `column.in_(values)` means.
"""

from __future__ import annotations

from sqlalchemy import func, select

from core.db import OneOf
from core.identity.models import Grant, User
from core.identity.service import ensure_user
from tests.conftest import World


def _names(world: World, values: list[str]) -> list[str]:
    with world.services.sessions() as session:
        query = select(User.name).where(OneOf(User.name, "names")).order_by(User.name)
        return list(session.scalars(query, {"names": values}))


def test_one_of_matches_exactly_the_listed_values(world: World) -> None:
    assert _names(world, ["alice", "bob", "nobody", "alice"]) == ["alice", "bob"]
    assert _names(world, []) == []
    many = [f"u{i}" for i in range(5000)]
    assert _names(world, [*many, "carol"]) == ["carol"]


def test_a_value_longer_than_the_column_is_not_cut_to_match_a_prefix(world: World) -> None:
    full = "x" * 64  # users.name is VARCHAR(64)
    with world.services.sessions() as session:
        ensure_user(session, full)
        session.commit()
    assert _names(world, [full]) == [full]
    # cast to VARCHAR(64)[], PostgreSQL would cut this to the name above and match it
    assert _names(world, [full + "y", full + "🚀"]) == []


def test_the_columns_table_joins_the_from_clause(world: World) -> None:
    # nothing else names `grants` here: OneOf alone must bring it into FROM
    with world.services.sessions() as session:
        alice = session.scalars(select(User.id).where(User.name == "alice")).one()
        query = select(func.count()).where(OneOf(Grant.user_id, "users"))
        held = session.scalar(query, {"users": [alice]})
        assert held == session.scalar(select(func.count()).where(Grant.user_id == alice))
        assert held
