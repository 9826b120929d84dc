"""The names a chat turn may address: the caller's projects, their services and environments."""

from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from agent.planner import Catalog
from core.permissions import Action, Actor
from core.targets.models import Project, Service, Target

# built once: every chat message reads them
_TARGETS = (
    select(Project.id, Project.name, Project.promotion, Target.environment)
    .join(Target, Target.project_id == Project.id)
    .order_by(Project.name, Target.id)
)
_SERVICES = (
    select(Service.project_id, Service.name)
    .where(Service.project_id.in_(bindparam("ids", expanding=True)))
    .order_by(Service.name)
)


def catalog_for(session: Session, actor: Actor) -> Catalog:
    """The actor's catalog in two queries, however many projects they can see.

    Every turn builds it: going through each target's project's services would cost a query
    per project (33 statements at 22 projects).
    """
    rows = session.execute(_TARGETS).all()
    visible = [row for row in rows if actor.can(Action.view, row.id)]
    environments: dict[str, list[str]] = {}
    for row in visible:
        environments.setdefault(row.name, []).append(row.environment)
    names = {row.id: row.name for row in visible}
    services: dict[str, list[str]] = {name: [] for name in environments}
    if names:
        for project_id, service in session.execute(_SERVICES, {"ids": list(names)}):
            services[names[project_id]].append(service)
    promotion = {row.name: list(row.promotion) for row in visible if row.promotion}
    return Catalog(services=services, environments=environments, promotion=promotion)
