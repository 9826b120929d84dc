"""Approval routes: the inbox, decisions, batch, takeover."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api.deps import ActorDep, BearerDep, ServicesDep
from api.errors import READ, WRITE, responses
from api.invoke import invoke, invoke_as, invoke_read
from api.params import ReleasePath
from core.releases.schemas import ApprovalPage, ReleaseRead
from tools.approvals import BatchResult, ListApprovalsInput
from tools.inputs import ReleaseId

router = APIRouter(prefix="/api/v1/approvals", tags=["approvals"])


class DecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: str | None = Field(default=None, max_length=2000)


class BatchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["approve", "reject"]
    release_ids: list[ReleaseId] = Field(min_length=1, max_length=100)
    comment: str | None = Field(default=None, max_length=2000)


@router.get("", response_model=ApprovalPage, responses=responses(*READ))
async def list_approvals(
    services: ServicesDep, bearer: BearerDep, query: Annotated[ListApprovalsInput, Query()]
) -> JSONResponse:
    """The global approval inbox, newest first (token check and tool in one thread hop)."""
    return await invoke_read(services, bearer, "list_approvals", query)


@router.post("/batch", response_model=BatchResult, responses=responses(*WRITE))
def decide_batch(
    request: Request, services: ServicesDep, actor: ActorDep, body: BatchBody
) -> JSONResponse:
    """Approve or reject several releases; each decision is audited on its own."""
    if body.action == "approve":
        args = {"release_ids": body.release_ids, "comment": body.comment}
        return invoke(request, services, actor, "approve_releases", args)
    args = {"release_ids": body.release_ids, "reason": body.comment}
    return invoke(request, services, actor, "reject_releases", args)


@router.post("/{release_id}/approve", response_model=ReleaseRead, responses=responses(*WRITE))
async def approve_release(
    request: Request,
    services: ServicesDep,
    bearer: BearerDep,
    release_id: ReleasePath,
    body: DecisionBody = Body(default_factory=DecisionBody),
) -> JSONResponse:
    """Approve the current step of a release's approval."""
    args = {"release_id": release_id, "comment": body.comment}
    return await invoke_as(request, services, bearer, "approve_release", args)


@router.post("/{release_id}/reject", response_model=ReleaseRead, responses=responses(*WRITE))
async def reject_release(
    request: Request,
    services: ServicesDep,
    bearer: BearerDep,
    release_id: ReleasePath,
    body: DecisionBody = Body(default_factory=DecisionBody),
) -> JSONResponse:
    """Reject a release waiting for approval."""
    args = {"release_id": release_id, "reason": body.comment}
    return await invoke_as(request, services, bearer, "reject_release", args)


@router.post("/{release_id}/takeover", response_model=ReleaseRead, responses=responses(*WRITE))
def takeover_approval(
    request: Request, services: ServicesDep, actor: ActorDep, release_id: ReleasePath
) -> JSONResponse:
    """Become the assignee of a pending approval."""
    return invoke(request, services, actor, "takeover_approval", {"release_id": release_id})
