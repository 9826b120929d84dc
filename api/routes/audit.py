"""Audit routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from api.deps import ActorDep, ServicesDep
from api.errors import READ, responses
from api.invoke import invoke
from core.audit.schemas import AuditPage
from core.audit.service import AuditVerification, Checkpoint, checkpoint
from core.permissions import Action, require
from tools.audit import ListAuditInput

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


@router.get("", response_model=AuditPage, responses=responses(*READ))
def list_audit(
    request: Request,
    services: ServicesDep,
    actor: ActorDep,
    query: Annotated[ListAuditInput, Query()],
) -> JSONResponse:
    """Audit events, newest first."""
    return invoke(request, services, actor, "list_audit", query)


@router.get("/verify", response_model=AuditVerification, responses=responses(401, 403))
def verify_audit(request: Request, services: ServicesDep, actor: ActorDep) -> JSONResponse:
    """Walk the hash chain; report the first broken link."""
    return invoke(request, services, actor, "verify_audit", {})


@router.get(
    "/checkpoint",
    response_model=Checkpoint,
    responses=responses(401, 403),
)
def audit_checkpoint(services: ServicesDep, actor: ActorDep) -> Checkpoint:
    """A signed {seq, head_hash, at} of the chain's head (admins), to keep outside shipdeck."""
    require(actor, Action.admin, None)
    with services.sessions() as session:
        return checkpoint(session)
