"""Audit routes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from api.deps import ActorDep, ServicesDep
from api.errors import READ, responses
from api.invoke import invoke
from core.audit.export import export_chunks
from core.audit.schemas import AuditPage
from core.audit.service import (
    AuditVerification,
    Checkpoint,
    canonical_json,
    checkpoint,
    record_access,
)
from core.db import utcnow
from core.identity.service import require_auditor
from core.permissions import Action, require
from tools.audit import ListAuditInput
from tools.inputs import Instant

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
        record_access(session, actor=actor, tool="export_audit", project=None, args=args)
        session.commit()

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
