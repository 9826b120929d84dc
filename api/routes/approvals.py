"""Approval routes: the inbox, decisions, batch, takeover."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api.deps import ActorDep, ServicesDep
from api.invoke import invoke

router = APIRouter(prefix="/api/v1/approvals", tags=["approvals"])


class DecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: str | None = Field(default=None, max_length=2000)


class BatchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["approve", "reject"]
    release_ids: list[str] = Field(min_length=1, max_length=100)
    comment: str | None = Field(default=None, max_length=2000)


@router.get("")
def list_approvals(
    request: Request,
    services: ServicesDep,
    actor: ActorDep,
    project: str | None = None,
    environment: str | None = None,
    risk: str | None = None,
    state: str | None = None,
    mine: bool = False,
    limit: int = 50,
    before: int | None = None,
) -> JSONResponse:
    """The global approval inbox, newest first."""
    args = {
        "project": project,
        "environment": environment,
        "risk": risk,
        "state": state,
        "mine": mine,
        "limit": limit,
        "before": before,
    }
    return invoke(request, services, actor, "list_approvals", args)


@router.post("/batch")
def decide_batch(
    request: Request, services: ServicesDep, actor: ActorDep, body: BatchBody
) -> JSONResponse:
    """Approve or reject several releases; each decision is audited on its own."""
    if body.action == "approve":
        args = {"release_ids": body.release_ids, "comment": body.comment}
        return invoke(request, services, actor, "approve_releases", args)
    args = {"release_ids": body.release_ids, "reason": body.comment}
    return invoke(request, services, actor, "reject_releases", args)


@router.post("/{release_id}/approve")
def approve_release(
    request: Request,
    services: ServicesDep,
    actor: ActorDep,
    release_id: str,
    body: DecisionBody = Body(default_factory=DecisionBody),
) -> JSONResponse:
    """Approve the current step of a release's approval."""
    args = {"release_id": release_id, "comment": body.comment}
    return invoke(request, services, actor, "approve_release", args)


@router.post("/{release_id}/reject")
def reject_release(
    request: Request,
    services: ServicesDep,
    actor: ActorDep,
    release_id: str,
    body: DecisionBody = Body(default_factory=DecisionBody),
) -> JSONResponse:
    """Reject a release waiting for approval."""
    args = {"release_id": release_id, "reason": body.comment}
    return invoke(request, services, actor, "reject_release", args)


@router.post("/{release_id}/takeover")
def takeover_approval(
    request: Request, services: ServicesDep, actor: ActorDep, release_id: str
) -> JSONResponse:
    """Become the assignee of a pending approval."""
    return invoke(request, services, actor, "takeover_approval", {"release_id": release_id})
