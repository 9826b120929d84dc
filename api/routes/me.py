"""Who am I."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import select

from api.deps import ActorDep, ServicesDep
from core.targets.models import Project

router = APIRouter(prefix="/api/v1", tags=["identity"])


@router.get("/me")
def me(services: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    """The caller's name and roles per project (`*` is every project)."""
    with services.sessions() as session:
        names = dict(session.execute(select(Project.id, Project.name)).tuples().all())
    return {
        "name": actor.name,
        "roles": {("*" if p is None else names.get(p, str(p))): r.value for p, r in actor.grants.items()},
    }
