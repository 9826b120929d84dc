"""Release routes: preview, re-preview, submit, apply, cancel, rollback, reads."""

from __future__ import annotations

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api.deps import ActorDep, ServicesDep
from api.invoke import invoke
from tools.releases import PreviewReleaseInput, RollbackReleaseInput

router = APIRouter(prefix="/api/v1", tags=["releases"])


class CancelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=2000)


@router.get("/releases")
def list_releases(
    request: Request,
    services: ServicesDep,
    actor: ActorDep,
    project: str | None = None,
    environment: str | None = None,
    state: str | None = None,
    limit: int = 50,
    before: str | None = None,
) -> JSONResponse:
    """Releases, newest first."""
    args = {
        "project": project,
        "environment": environment,
        "state": state,
        "limit": limit,
        "before": before,
    }
    return invoke(request, services, actor, "list_releases", args)


@router.post("/releases", status_code=201)
def preview_release(
    request: Request, services: ServicesDep, actor: ActorDep, body: PreviewReleaseInput
) -> JSONResponse:
    """Create a release and its preview."""
    return invoke(request, services, actor, "preview_release", body, status_code=201)


@router.get("/releases/{release_id}")
def get_release(
    request: Request, services: ServicesDep, actor: ActorDep, release_id: str
) -> JSONResponse:
    """One release."""
    return invoke(request, services, actor, "get_release", {"release_id": release_id})


@router.get("/releases/{release_id}/timeline")
def release_timeline(
    request: Request, services: ServicesDep, actor: ActorDep, release_id: str
) -> JSONResponse:
    """Audit events and runtime progress of one release, in order."""
    return invoke(request, services, actor, "release_timeline", {"release_id": release_id})


@router.post("/releases/{release_id}/preview")
def repreview_release(
    request: Request, services: ServicesDep, actor: ActorDep, release_id: str
) -> JSONResponse:
    """Re-preview a release, keeping its id."""
    return invoke(request, services, actor, "repreview_release", {"release_id": release_id})


@router.post("/releases/{release_id}/submit")
def submit_release(
    request: Request, services: ServicesDep, actor: ActorDep, release_id: str
) -> JSONResponse:
    """Submit a previewed release to policy."""
    return invoke(request, services, actor, "submit_release", {"release_id": release_id})


@router.post("/releases/{release_id}/apply", status_code=202)
def apply_release(
    request: Request, services: ServicesDep, actor: ActorDep, release_id: str
) -> JSONResponse:
    """Start applying an approved release; poll it or its timeline for the outcome."""
    args = {"release_id": release_id}
    return invoke(request, services, actor, "apply_release", args, status_code=202)


@router.post("/releases/{release_id}/cancel")
def cancel_release(
    request: Request,
    services: ServicesDep,
    actor: ActorDep,
    release_id: str,
    body: CancelBody = Body(default_factory=CancelBody),
) -> JSONResponse:
    """Cancel a release that has not started applying."""
    args = {"release_id": release_id, "reason": body.reason}
    return invoke(request, services, actor, "cancel_release", args)


@router.post("/rollbacks", status_code=201)
def rollback_release(
    request: Request, services: ServicesDep, actor: ActorDep, body: RollbackReleaseInput
) -> JSONResponse:
    """Preview a rollback of a target to an earlier applied revision."""
    return invoke(request, services, actor, "rollback_release", body, status_code=201)
