"""Target routes."""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from api.deps import BearerDep, ServicesDep
from api.errors import READ, responses
from api.invoke import invoke_read
from api.params import EnvironmentPath, ProjectPath
from core.targets.schemas import TargetStatus
from runtimes.base import Diagnosis
from tools.inputs import NAME
from tools.targets import TargetList

router = APIRouter(prefix="/api/v1/targets", tags=["targets"])

# Reads: `async def`, the token check and the tool in one thread hop (api.invoke.invoke_read).


@router.get("", response_model=TargetList, responses=responses(*READ))
async def list_targets(
    services: ServicesDep,
    bearer: BearerDep,
    project: str | None = Query(default=None, pattern=NAME, description="Only this project."),
) -> JSONResponse:
    """Targets the caller can see."""
    return await invoke_read(services, bearer, "list_targets", {"project": project})


@router.get(
    "/{project}/{environment}", response_model=TargetStatus, responses=responses(*READ, 502)
)
async def target_status(
    services: ServicesDep,
    bearer: BearerDep,
    project: ProjectPath,
    environment: EnvironmentPath,
) -> JSONResponse:
    """Live state of a target's services."""
    args = {"project": project, "environment": environment}
    return await invoke_read(services, bearer, "target_status", args)


@router.get(
    "/{project}/{environment}/diagnose",
    response_model=Diagnosis,
    responses=responses(*READ, 502),
)
async def diagnose_target(
    services: ServicesDep,
    bearer: BearerDep,
    project: ProjectPath,
    environment: EnvironmentPath,
    service: str | None = Query(default=None, pattern=NAME, description="Only this service."),
) -> JSONResponse:
    """Logs, events and health of a target's services."""
    args = {"project": project, "environment": environment, "service": service}
    return await invoke_read(services, bearer, "diagnose_target", args)
