"""Audit routes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.deps import ActorDep, ServicesDep
from api.errors import READ, responses
from api.invoke import invoke
from core.audit.access_reads import list_access
from core.audit.export import export_chunks
from core.audit.schemas import AccessPage, AuditPage
from core.audit.service import (
    AuditVerification,
    Checkpoint,
    canonical_json,
    checkpoint,
)
from core.db import utcnow
from core.identity.service import require_auditor
from core.ids import MAX_ID
from core.permissions import Action, require
from tools.audit import ListAuditInput
from tools.inputs import Instant

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])
# An ISO date, or date and time with an optional zone (a query string, so no unix numbers).
WHEN = (
    r"^[1-9]\d{3}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
    r"([T ]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)?)?$"
)


class AccessQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    actor: str | None = Field(default=None, min_length=1, max_length=64, description="Who read.")
    project: str | None = Field(default=None, min_length=1, max_length=64)
    tool: str | None = Field(default=None, min_length=1, max_length=64, description="Which read.")
    since: str | None = Field(
        default=None, pattern=WHEN, description="From this ISO date/time (UTC if no zone)."
    )
    until: str | None = Field(default=None, pattern=WHEN, description="Before this date/time.")
    limit: int = Field(default=100, ge=1, le=500)
    before: int | None = Field(
        default=None, ge=1, le=MAX_ID, description="Cursor: records before this id."
    )

    @field_validator("since", "until")
    @classmethod
    def _a_real_time(cls, value: str | None) -> str | None:
        if value is not None:
            datetime.fromisoformat(value)  # 2026-02-31 matches the pattern: a 422, not a 500
        return value


def _when(value: str | None) -> datetime | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


@router.get("", response_model=AuditPage, responses=responses(*READ))
def list_audit(
    request: Request,
    services: ServicesDep,
    actor: ActorDep,
    query: Annotated[ListAuditInput, Query()],
) -> JSONResponse:
    """Audit events, newest first."""
    return invoke(request, services, actor, "list_audit", query)


ExportFormat = Literal["jsonl", "csv"]
MEDIA = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}
DOWNLOADS = ("application/x-ndjson", "text/csv")


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={
        **responses(*READ),
        200: {
            "description": "The events, one JSON object a line (jsonl) or CSV with a header.",
            "content": {media: {"schema": {"type": "string"}} for media in DOWNLOADS},
        },
    },
)
def export_audit(
    services: ServicesDep,
    actor: ActorDep,
    fmt: Annotated[ExportFormat, Query(alias="format", description="jsonl or csv.")] = "jsonl",
    since: Annotated[Instant | None, Query(description="Events at or after it.")] = None,
    until: Annotated[Instant | None, Query(description="Events before it.")] = None,
) -> StreamingResponse:
    """The chain with every field (admins and the `auditor` group), streamed from one snapshot.

    A JSONL export verifies on its own (`shipdeck audit verify --file`).
    """
    with services.sessions() as session:
        require_auditor(session, actor)
        bounds = {"since": since, "until": until}
        args = canonical_json(
            {"format": fmt} | {k: v.isoformat() for k, v in bounds.items() if v is not None}
        )
    services.access.record(actor=actor, tool="export_audit", project=None, args=args)

    def chunks() -> Iterator[str]:
        with services.sessions() as session:
            yield from export_chunks(session, since=since, until=until, fmt=fmt)

    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(
        chunks(),
        media_type=MEDIA[fmt],
        headers={"Content-Disposition": f'attachment; filename="shipdeck-audit-{stamp}.{fmt}"'},
    )


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
            since=_when(query.since),
            until=_when(query.until),
            before=query.before,
            limit=query.limit,
        )
    args = query.model_dump_json(exclude_none=True)
    services.access.record(actor=actor, tool="audit_access", project=query.project, args=args)
    return page
