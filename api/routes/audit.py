"""Audit routes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.deps import ActorDep, ServicesDep
from api.errors import READ, responses
from api.invoke import invoke
from core.audit.access_reads import list_access
from core.audit.schemas import AccessPage, AuditPage
from core.audit.service import AuditVerification, Checkpoint, checkpoint
from core.permissions import Action, require
from tools.audit import ListAuditInput

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


class AccessQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    actor: str | None = Field(default=None, min_length=1, max_length=64, description="Who read.")
    project: str | None = Field(default=None, min_length=1, max_length=64)
    tool: str | None = Field(default=None, min_length=1, max_length=64, description="Which read.")
    since: datetime | None = Field(default=None, description="From this time (UTC if no zone).")
    until: datetime | None = Field(default=None, description="Before this time.")
    limit: int = Field(default=100, ge=1, le=500)
    before: int | None = Field(
        default=None, ge=1, le=10**15, description="Cursor: records before this id."
    )

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


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


@router.get("/access", response_model=AccessPage, responses=responses(*READ))
def list_access_log(
    services: ServicesDep, actor: ActorDep, query: Annotated[AccessQuery, Query()]
) -> AccessPage:
    """Who read what (the access log, outside the chain), newest first (admins)."""
    with services.reads() as session:
        page = list_access(
            session,
            actor=actor,
            user=query.actor,
            project=query.project,
            tool=query.tool,
            since=query.since,
            until=query.until,
            before=query.before,
            limit=query.limit,
        )
    args = query.model_dump_json(exclude_none=True)
    services.access.record(actor=actor, tool="audit_access", project=query.project, args=args)
    return page
