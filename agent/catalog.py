"""The names a chat turn may address: the caller's projects, their services and environments."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from agent.planner import Catalog
from core.db import AnyRow, plain_rows
from core.permissions import Action, Actor
from core.targets.models import CatalogVersion, Project, Service, Target

# built once: every chat message reads them
CATALOG_TOKEN = select(CatalogVersion.token).scalar_subquery()  # for a statement of the caller's
_TOKEN = select(CatalogVersion.token)
_TARGETS = (
    select(Project.id, Project.name, Project.promotion, Target.environment)
    .join(Target, Target.project_id == Project.id)
    .order_by(Project.name, Target.id)
)
_SERVICES = select(Service.project_id, Service.name).order_by(Service.name)

Rows = tuple[Sequence[AnyRow], Sequence[AnyRow]]


class _Read:
    """Everyone's catalog rows by the token they were read at (a few, newest last)."""

    def __init__(self, keep: int = 8) -> None:
        self.keep = keep
        self._rows: OrderedDict[str, Rows] = OrderedDict()
        self._lock = threading.Lock()

    def rows(self, session: Session, token: str | None) -> Rows:
        """The rows as of now, given the token just read: read again only if it moved.

        Rows read apart from the token may be newer than it (on PostgreSQL each statement has
        its own snapshot), so they are kept only if the token still stands once they are read:
        a commit that changed them changed the token too. Without a token (the row deleted by
        hand) every turn reads the rows.
        """
        with self._lock:
            found = self._rows.get(token) if token is not None else None
        if found is not None:
            return found
        rows = (plain_rows(session, _TARGETS), plain_rows(session, _SERVICES))
        if token is not None and token == _token(session):
            with self._lock:
                self._rows[token] = rows
                while len(self._rows) > self.keep:
                    self._rows.popitem(last=False)
        return rows


_READ = _Read()


def _token(session: Session) -> str | None:
    found = plain_rows(session, _TOKEN)
    return str(found[0][0]) if found else None


def catalog_for(session: Session, actor: Actor) -> Catalog:
    """The actor's catalog: one statement while no project, target or service changed."""
    return catalog_at(session, actor, _token(session))


def catalog_at(session: Session, actor: Actor, token: str | None) -> Catalog:
    """The actor's catalog, given the catalog token read just before (`CATALOG_TOKEN`).

    The rows every caller's catalog is cut from are kept by the catalog token, which database
    triggers move on every write to those tables (migration 0011); they were two statements
    every turn, and a query per project before that (33 statements at 22 projects).
    """
    targets, services = _READ.rows(session, token)
    visible = [row for row in targets if actor.can(Action.view, row.id)]
    environments: dict[str, list[str]] = {}
    for row in visible:
        environments.setdefault(row.name, []).append(row.environment)
    names = {row.id: row.name for row in visible}
    by_project: dict[str, list[str]] = {name: [] for name in environments}
    for project_id, service in services:
        if project_id in names:
            by_project[names[project_id]].append(service)
    promotion = {row.name: list(row.promotion) for row in visible if row.promotion}
    return Catalog(services=by_project, environments=environments, promotion=promotion)
