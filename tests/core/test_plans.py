"""PostgreSQL plans each hot read once per connection, not at every execution.

psycopg prepares a statement its connection runs often; the server then reuses one generic
plan unless a plan for the bound values looks cheaper. Against a bound LIMIT (a releases
page) or a one-value array (`= ANY`, one release by number) it always did, so it planned
those statements again at every execution: ~8 ms of a ~10 ms releases page, 2-3x the
database's CPU per read request. `pg_prepared_statements` counts each statement's plans.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text

from agent.cards import release_view
from api.wiring import Services
from core.config import Settings
from core.db import read_engine
from core.releases.models import Release
from tests.conftest import World, build_world
from tests.support.calls import call, deploy
from tools.registry import get_tool

RUNS = 12  # psycopg prepares at the 6th execution; the server goes generic after 5 more


@pytest.fixture
def one_reader(pg_services: Services) -> Iterator[tuple[World, Services]]:
    """The world, and services on it whose reads all take one pooled connection."""
    world = build_world(pg_services)
    url = str(pg_services.engine.url.render_as_string(hide_password=False))
    small = Services.build(Settings(database_url=url, db_pool_size=2), inline_apply=True)
    try:
        yield world, small
    finally:
        small.close()


def test_hot_reads_are_planned_once_per_connection(one_reader: tuple[World, Services]) -> None:
    world, small = one_reader
    made = [
        deploy(world, "alice", "shop", env, web={"image_tag": "5.0"}) for env in ("dev", "prod")
    ]
    call(world, "alice", "submit_release", release_id=made[1].id)
    # History for the planner to weigh (a bound LIMIT's generic plan sorts all of it), and
    # its view of these rows rather than of whatever earlier tests left in the tables.
    columns = ", ".join(c.name for c in Release.__table__.columns if c.name != "number")
    with small.engine.begin() as connection:
        connection.execute(
            text(
                f"INSERT INTO releases ({columns}) SELECT {columns} FROM releases, "
                "generate_series(1, 30000) WHERE number = :number"
            ),
            {"number": int(made[0].id.removeprefix("R-"))},
        )
        connection.execute(text("ANALYZE"))
    # A page limited to a reader's projects is left out: with skewed projects (30,000 releases
    # on shop, none on payment) a plan for the reader's own projects IS much cheaper, and the
    # server rightly plans it each time.
    reads = [
        ("admin", "get_release", {"release_id": made[0].id}),
        ("bob", "get_release", {"release_id": made[1].id}),  # with its open ticket
        ("admin", "list_releases", {}),
        ("admin", "list_releases", {"limit": 1, "before": made[1].id}),
        ("admin", "list_approvals", {}),
        ("bob", "list_approvals", {}),
    ]
    for _ in range(RUNS):
        for user, tool, args in reads:
            get_tool(tool).run(small.context(world.actor(user)), args)
        with small.reads() as session:  # what the hub reads for a card, at every fan-out
            release_view(session, int(made[1].id.removeprefix("R-")))
    with read_engine(small.engine).connect() as connection:  # the one reader connection
        plans = connection.execute(
            text("SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements")
        ).all()
    releases = [p for p in plans if "FROM releases" in p.statement]
    assert len(releases) >= 4, plans  # one release; pages with and without a cursor, one project
    replanned = [" ".join(p.statement.split()) for p in plans if p.generic_plans == 0]
    assert replanned == []
