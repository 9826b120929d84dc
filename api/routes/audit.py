"""Audit routes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import ActorDep, ServicesDep
from api.invoke import invoke
from core.audit.service import Checkpoint, checkpoint
from core.permissions import Action, require

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


@router.get("")
def list_audit(
    request: Request,
    services: ServicesDep,
    actor: ActorDep,
    project: str | None = None,
    release_id: str | None = None,
    limit: int = 100,
    before: int | None = None,
) -> JSONResponse:
    """Audit events, newest first."""
    args = {"project": project, "release_id": release_id, "limit": limit, "before": before}
    return invoke(request, services, actor, "list_audit", args)


@router.get("/verify")
def verify_audit(request: Request, services: ServicesDep, actor: ActorDep) -> JSONResponse:
    """Walk the hash chain; report the first broken link."""
    return invoke(request, services, actor, "verify_audit", {})


@router.get(
    "/checkpoint",
    response_model=Checkpoint,
    responses={403: {"description": "Only admins cut checkpoints."}},
)
def audit_checkpoint(services: ServicesDep, actor: ActorDep) -> Checkpoint:
    """A signed {seq, head_hash, at} of the chain's head (admins), to keep outside shipdeck."""
    require(actor, Action.admin, None)
    with services.sessions() as session:
        return checkpoint(session)
