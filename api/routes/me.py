"""Who am I."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import ActorDep, ServicesDep
from api.errors import responses
from core.identity.service import roles_by_project

router = APIRouter(prefix="/api/v1", tags=["identity"])


class MeRead(BaseModel):
    """The caller and their roles."""

    name: str
    roles: dict[str, str] = Field(description="Role per project name; `*` is every project.")


@router.get("/me", response_model=MeRead, responses=responses(401))
def me(services: ServicesDep, actor: ActorDep) -> MeRead:
    """The caller's name and roles per project (`*` is every project)."""
    with services.reads() as session:
        return MeRead(name=actor.name, roles=roles_by_project(session, actor))
