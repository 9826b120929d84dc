"""Shared fixtures: databases (SQLite and a real PostgreSQL), wired services, a demo world."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from api.wiring import Services
from core.config import Settings
from core.identity.models import User
from core.identity.service import actor_for, ensure_user, issue_token, set_grant
from core.permissions import SYSTEM, Actor, Role
from core.targets.service import load_declaration, parse_declaration
from tests.support.events import published
from tests.support.postgres import throwaway_cluster

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

WORLD = """
groups:
  sre: [carol, dave]
projects:
  - name: shop
    services: [web, api, worker]
    owners: [bob, dave]
    approvers: [erin]
    requesters: [alice]
    viewers: [victor]
    targets:
      - {environment: dev, runtime: sandbox, images: {web: shop/web:1.4.1, api: shop/api:2.0.0}}
      - {environment: staging, runtime: sandbox}
      - {environment: prod, runtime: sandbox, images: {web: shop/web:1.4.1, api: shop/api:2.0.0}}
  - name: payment
    services: [gateway]
    requesters: [alice]
    owners: [frank]
    targets:
      - {environment: prod, runtime: sandbox}
    policies:
      - environment: prod
        steps: [{group: owners, count: 1}, {group: sre, count: 1}]
      - environment: prod
        emergency: true
        steps: [{group: sre, count: 1}]
"""


def service_unavailable(reason: str) -> None:
    """Skip outside CI; fail in CI, where every service must be there."""
    if IN_CI:
        pytest.fail(f"required service missing in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests talk to loopback only; anything else is a bug in the test or the code."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> object:
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise RuntimeError(f"test tried to reach the network: {address!r}")
        return real_connect(self, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    """A PostgreSQL URL: SHIPDECK_TEST_DATABASE_URL, or a throwaway cluster, or None."""
    given = os.environ.get("SHIPDECK_TEST_DATABASE_URL")
    if given:
        yield given
        return
    with ExitStack() as stack:
        try:
            url = stack.enter_context(throwaway_cluster())
        except (FileNotFoundError, OSError) as exc:
            yield None
            _ = exc
            return
        except Exception as exc:  # initdb/pg_ctl failed: report why
            pytest.fail(f"could not start a throwaway PostgreSQL: {exc}")
        yield url
        # Close what still talks to it (listener threads, pools) before the cluster stops.
        services = _migrated.pop(url, None)
        if services is not None:
            services.close()


_migrated: dict[str, Services] = {}


def _services_for(url: str) -> Services:
    if url not in _migrated:
        services = Services.build(Settings(database_url=url), inline_apply=True)
        services.migrate()
        _migrated[url] = services
    return _migrated[url]


def _settle(services: Services) -> None:
    """Let background work from the last test finish (apply jobs, then the chat hub).

    On PostgreSQL live events reach the hub through NOTIFY, after commit: wait until the
    listener has published the last committed one, then until the hub has handled it (its
    own work may publish more: a few rounds).
    """
    services.runner.drain()
    services.access.flush()  # no read of the last test lands after the wipe
    for _ in range(3):
        last = published(services)
        if services._hub is not None:
            services._hub.drain()
        if last is None:
            return
        with services.engine.connect() as connection:
            if connection.execute(text("SELECT max(id) FROM live_outbox")).scalar() == last:
                return


def _wipe(services: Services) -> None:
    # A hub thread still handling the last test's event would deadlock with TRUNCATE.
    _settle(services)
    if services._hub is not None:  # the last test's sessions: user ids restart with the wipe
        services._hub.forget()
    for attempt in range(5):
        try:
            _wipe_once(services)
            return
        except OperationalError as exc:
            # a background reader of the last test (notify worker, identity watch) held a
            # table: PostgreSQL picked TRUNCATE as the deadlock victim; the reader is gone now
            if "deadlock" not in str(exc) or attempt == 4:
                raise


def _wipe_once(services: Services) -> None:
    with services.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            tables = (
                connection.execute(
                    # live_outbox keeps its ids growing: `_settle` waits for the listener by id;
                    # catalog_version is the schema's own row (its token moves with the wipe)
                    text(
                        "SELECT tablename FROM pg_tables WHERE schemaname='public' "
                        "AND tablename NOT IN ('alembic_version', 'live_outbox', 'catalog_version')"
                    )
                )
                .scalars()
                .all()
            )
            connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            tables = (
                connection.execute(
                    text(
                        "SELECT name FROM sqlite_master WHERE type='table' "
                        "AND name NOT IN ('alembic_version', 'sqlite_sequence', 'catalog_version')"
                    )
                )
                .scalars()
                .all()
            )
            connection.exec_driver_sql("PRAGMA defer_foreign_keys=ON")
            for table in tables:
                connection.execute(text(f"DELETE FROM {table}"))


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'shipdeck.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """Each core/REST test runs on SQLite and on a real PostgreSQL."""
    if request.param == "sqlite":
        return sqlite_url
    url = request.getfixturevalue("postgres_url")
    if url is None:
        service_unavailable("PostgreSQL is not available (no initdb/pg_ctl, no test URL)")
    return str(url)


@pytest.fixture
def services(db_url: str) -> Iterator[Services]:
    """Wired, migrated services on an empty database (inline applies)."""
    wired = _services_for(db_url)
    _wipe(wired)
    yield wired
    _settle(wired)


@pytest.fixture
def pg_services(request: pytest.FixtureRequest) -> Iterator[Services]:
    """Services on PostgreSQL only (concurrency needs real row locks)."""
    url = request.getfixturevalue("postgres_url")
    if url is None:
        service_unavailable("PostgreSQL is not available (no initdb/pg_ctl, no test URL)")
    wired = _services_for(str(url))
    _wipe(wired)
    yield wired


@dataclass
class World:
    """The test world: services plus actors and tokens by user name."""

    services: Services
    actors: dict[str, Actor]
    tokens: dict[str, str]

    def actor(self, name: str) -> Actor:
        return self.actors[name]

    def target_id(self, project: str, environment: str) -> int:
        from core.targets.service import get_target

        with self.services.sessions() as session:
            return get_target(session, project, environment).id


def build_world(services: Services) -> World:
    with services.sessions() as session:
        load_declaration(session, actor=SYSTEM, declaration=parse_declaration(WORLD))
        admin = ensure_user(session, "admin")
        set_grant(session, admin, Role.admin, None)
        tokens = {}
        for user in session.query(User).all():
            tokens[user.name] = issue_token(session, user)
        session.commit()
        actors = {u.name: actor_for(u) for u in session.query(User).all()}
    return World(services, actors, tokens)


@pytest.fixture
def world(services: Services) -> World:
    """Project `shop` (dev/staging/prod, default policy) and `payment` (two-step policy)."""
    return build_world(services)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
