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

    def rows(self, session: Session) -> Rows:
        """The rows as of now: read again only if the token moved since they were read.

        The token is read first: rows read after it are at least as new as it, so a token
        found again always means rows that are current. Without a token (the row deleted by
        hand) every turn reads the rows.
        """
        token = plain_rows(session, _TOKEN)
        key = str(token[0][0]) if token else None
        with self._lock:
            found = self._rows.get(key) if key is not None else None
        if found is not None:
            return found
        rows = (plain_rows(session, _TARGETS), plain_rows(session, _SERVICES))
        if key is not None:
            with self._lock:
                self._rows[key] = rows
                while len(self._rows) > self.keep:
                    self._rows.popitem(last=False)
        return rows


_READ = _Read()


def catalog_for(session: Session, actor: Actor) -> Catalog:
    """The actor's catalog: one statement while no project, target or service changed.

    The rows every caller's catalog is cut from are kept by the catalog token, which database
    triggers move on every write to those tables (migration 0011); they were two statements
    every turn, and a query per project before that (33 statements at 22 projects).
    """
    targets, services = _READ.rows(session)
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
