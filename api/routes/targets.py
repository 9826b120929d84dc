"""Target routes."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from api.deps import ActorDep, ServicesDep
from api.errors import READ, responses
from api.invoke import invoke
from api.params import EnvironmentPath, ProjectPath
from core.targets.schemas import TargetStatus
from runtimes.base import Diagnosis
from tools.inputs import NAME
from tools.targets import TargetList

router = APIRouter(prefix="/api/v1/targets", tags=["targets"])


@router.get("", response_model=TargetList, responses=responses(*READ))
def list_targets(
    request: Request,
    services: ServicesDep,
    actor: ActorDep,
    project: str | None = Query(default=None, pattern=NAME, description="Only this project."),
) -> JSONResponse:
    """Targets the caller can see."""
    return invoke(request, services, actor, "list_targets", {"project": project})


@router.get(
    "/{project}/{environment}", response_model=TargetStatus, responses=responses(*READ, 502)
)
def target_status(
    request: Request,
    services: ServicesDep,
    actor: ActorDep,
    project: ProjectPath,
    environment: EnvironmentPath,
) -> JSONResponse:
    """Live state of a target's services."""
    args = {"project": project, "environment": environment}
    return invoke(request, services, actor, "target_status", args)


@router.get(
    "/{project}/{environment}/diagnose",
    response_model=Diagnosis,
    responses=responses(*READ, 502),
)
def diagnose_target(
    request: Request,
    services: ServicesDep,
    actor: ActorDep,
    project: ProjectPath,
    environment: EnvironmentPath,
    service: str | None = Query(default=None, pattern=NAME, description="Only this service."),
) -> JSONResponse:
    """Logs, events and health of a target's services."""
    args = {"project": project, "environment": environment, "service": service}
    return invoke(request, services, actor, "diagnose_target", args)
