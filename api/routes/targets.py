"""Target routes."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from api.deps import ActorDep, ServicesDep
from api.invoke import invoke

router = APIRouter(prefix="/api/v1/targets", tags=["targets"])


@router.get("")
def list_targets(
    request: Request, services: ServicesDep, actor: ActorDep, project: str | None = None
) -> JSONResponse:
    """Targets the caller can see."""
    return invoke(request, services, actor, "list_targets", {"project": project})


@router.get("/{project}/{environment}")
def target_status(
    request: Request, services: ServicesDep, actor: ActorDep, project: str, environment: str
) -> JSONResponse:
    """Live state of a target's services."""
    args = {"project": project, "environment": environment}
    return invoke(request, services, actor, "target_status", args)


@router.get("/{project}/{environment}/diagnose")
def diagnose_target(
    request: Request,
    services: ServicesDep,
    actor: ActorDep,
    project: str,
    environment: str,
    service: str | None = Query(default=None),
) -> JSONResponse:
    """Logs, events and health of a target's services."""
    args = {"project": project, "environment": environment, "service": service}
    return invoke(request, services, actor, "diagnose_target", args)
