"""Who am I."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import ActorDep, ServicesDep
from core.identity.service import roles_by_project

router = APIRouter(prefix="/api/v1", tags=["identity"])


@router.get("/me")
def me(services: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    """The caller's name and roles per project (`*` is every project)."""
    with services.reads() as session:
        return {"name": actor.name, "roles": roles_by_project(session, actor)}
