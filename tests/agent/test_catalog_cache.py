"""A chat turn's catalog is kept while nothing changed, and is never older than the database.

The rows every caller's catalog is cut from are read again only when the catalog token moved;
database triggers move it on every write to projects, targets and services, whoever writes
(a declaration load, or an operator's SQL).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from agent.catalog import catalog_at, catalog_for
from agent.planner import Catalog
from api.wiring import Services
from core.config import Settings
from core.permissions import SYSTEM
from core.targets.service import load_declaration, parse_declaration
from tests.conftest import World, build_world
from tests.core.test_query_counts import counted

ODD = "z" + "-" * 62  # the longest, oddest service name a declaration accepts


def _catalog(world: World, user: str = "admin") -> Catalog:
    with world.services.reads() as session:
        return catalog_for(session, world.actor(user))


def _declare(services: Services, declaration: str) -> None:
    with services.sessions() as session:
        load_declaration(session, actor=SYSTEM, declaration=parse_declaration(declaration))
        session.commit()


def _sql(world: World, statement: str) -> None:
    with world.services.engine.begin() as connection:
        connection.execute(text(statement))


def _token(world: World) -> str:
    with world.services.engine.connect() as connection:
        return str(connection.execute(text("SELECT token FROM catalog_version")).scalar_one())


def test_an_unchanged_catalog_costs_one_statement(world: World) -> None:
    first = _catalog(world)
    with counted(world) as statements:
        again = _catalog(world)
    assert again == first
    assert [s.split()[0:2] for s in statements if not s.startswith("BEGIN")] == [
        ["SELECT", "catalog_version.token"]
    ], statements


def test_a_declaration_load_shows_in_the_next_catalog(world: World) -> None:
    before = _catalog(world)
    _declare(
        world.services,
        f"""
projects:
  - name: shop
    services: [web, api, worker, "{ODD}"]
    promotion: [dev, staging, prod]
    targets:
      - {{environment: dev, runtime: sandbox}}
      - {{environment: staging, runtime: sandbox}}
      - {{environment: prod, runtime: sandbox}}
      - {{environment: qa, runtime: sandbox}}
  - name: brand-new
    services: [api]
    targets:
      - {{environment: dev, runtime: sandbox}}
""",
    )
    after = _catalog(world)
    assert ODD in after.services["shop"] and ODD not in before.services["shop"]
    assert after.environments["shop"][-1] == "qa"
    assert after.promotion["shop"] == ["dev", "staging", "prod"]
    assert after.services["brand-new"] == ["api"]
    # who sees what is the caller's own: a requester of shop alone does not see the new one
    assert "brand-new" not in _catalog(world, "alice").services


def test_an_operators_sql_shows_in_the_next_catalog(world: World) -> None:
    _catalog(world)
    _sql(world, "UPDATE projects SET promotion = '[\"dev\", \"prod\"]' WHERE name = 'shop'")
    assert _catalog(world).promotion["shop"] == ["dev", "prod"]
    _sql(world, "DELETE FROM services WHERE name = 'worker'")
    assert "worker" not in _catalog(world).services["shop"]
    _sql(world, "UPDATE targets SET environment = 'production' WHERE environment = 'prod'")
    assert "production" in _catalog(world).environments["shop"]


def test_writes_to_what_no_catalog_shows_keep_the_token(world: World) -> None:
    token = _token(world)
    _sql(world, "UPDATE targets SET risk_tier = 'low', preview_ttl_seconds = 60")
    assert _token(world) == token
    _sql(world, "UPDATE projects SET name = name")  # written, though to the same value
    assert _token(world) != token


def test_without_its_token_row_the_catalog_is_read_every_time(world: World) -> None:
    _catalog(world)
    _sql(world, "DELETE FROM catalog_version")
    _sql(world, "DELETE FROM services WHERE name = 'api'")
    assert "api" not in _catalog(world).services["shop"]
    with counted(world) as statements:
        _catalog(world)
    assert len([s for s in statements if s.startswith("SELECT")]) == 3, statements
    _sql(world, "INSERT INTO catalog_version (id, token) VALUES (1, 'restored')")


def test_two_databases_with_the_same_rows_keep_their_own_catalogs(
    world: World, tmp_path: Path
) -> None:
    """The token is random: another database (or this one restored) never matches rows
    read from a different one, even at the same URL."""
    other = Services.build(Settings(database_url=f"sqlite:///{tmp_path / 'other.db'}"))
    try:
        other.migrate()
        _declare(
            other,
            "projects:\n  - name: shop\n    services: [solo]\n"
            "    targets:\n      - {environment: dev, runtime: sandbox}\n",
        )
        here = _catalog(world)
        with other.reads() as session:
            there = catalog_for(session, SYSTEM)
        assert there.services == {"shop": ["solo"]}
        assert _catalog(world) == here
        assert here.services["shop"] != ["solo"]
    finally:
        other.close()


def test_rows_newer_than_their_token_are_not_kept_under_it(world: World) -> None:
    """A turn reads the token, then (on a miss) the rows: a declaration committed in between
    makes the rows newer than the token, and they must not be kept under it (a clone or a
    restore of the database holds that token with the older rows)."""
    before = _token(world)
    _declare(
        world.services,
        "projects:\n  - name: late\n    services: [api]\n"
        "    targets:\n      - {environment: dev, runtime: sandbox}\n",
    )
    with world.services.reads() as session:
        late = catalog_at(session, world.actor("admin"), before)
    assert "late" in late.services  # the rows are the current ones
    with counted(world) as statements, world.services.reads() as session:
        catalog_at(session, world.actor("admin"), before)
    selects = [s.split()[1] for s in statements if s.startswith("SELECT")]
    assert selects[:2] == ["projects.id,", "services.project_id,"], statements  # read again


def test_the_catalog_triggers_are_in_place(world: World) -> None:
    """A later migration that rebuilds one of these tables (SQLite's batch mode copies a table
    and drops its triggers) must put them back, or every catalog would go stale: this fails."""
    with world.services.engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            found = connection.execute(
                text(
                    "SELECT event_object_table, event_manipulation FROM "
                    "information_schema.triggers WHERE trigger_name = 'catalog_changed'"
                )
            ).all()
            expected = {
                (table, event)
                for table in ("projects", "targets", "services")
                for event in ("INSERT", "DELETE", "UPDATE")
            }
        else:
            found = connection.execute(
                text("SELECT tbl_name, name FROM sqlite_master WHERE type = 'trigger'")
            ).all()
            expected = {
                (table, f"{table}_catalog_{event}")
                for table in ("projects", "targets", "services")
                for event in ("insert", "delete", "update")
            }
    assert expected <= {tuple(row) for row in found}, found


def test_an_operator_with_another_search_path_can_still_write(pg_services: Services) -> None:
    """The trigger's function finds its table whatever the writer's search_path (PostgreSQL)."""
    world = build_world(pg_services)
    with world.services.engine.begin() as connection:
        schema = connection.execute(text("SELECT current_schema()")).scalar_one()
        connection.execute(text("SET LOCAL search_path = pg_catalog"))
        connection.execute(
            text(f"UPDATE {schema}.projects SET promotion = '[\"dev\"]' WHERE name = 'shop'")
        )
    assert _catalog(world).promotion["shop"] == ["dev"]
