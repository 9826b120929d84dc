"""Release routes: preview, re-preview, submit, apply, cancel, rollback, reads."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api.deps import ActorDep, BearerDep, ServicesDep
from api.errors import READ, WRITE, responses
from api.invoke import invoke, invoke_as, invoke_read
from api.metrics import label_request
from api.params import ReleasePath
from api.waiting import MAX_WAIT_SECONDS, WAITING_READ, read_when_moved
from core.releases.lifecycle import State
from core.releases.schemas import ReleasePage, ReleaseRead, Timeline
from tools.releases import ListReleasesInput, PreviewReleaseInput, RollbackReleaseInput

router = APIRouter(prefix="/api/v1", tags=["releases"])


class CancelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=2000)


# The hot reads and writes are `async def` and run the token check and the tool in one thread
# hop (api.invoke).
@router.get("/releases", response_model=ReleasePage, responses=responses(*READ))
async def list_releases(
    services: ServicesDep, bearer: BearerDep, query: Annotated[ListReleasesInput, Query()]
) -> JSONResponse:
    """Releases, newest first."""
    return await invoke_read(services, bearer, "list_releases", query)


@router.post(
    "/releases",
    status_code=201,
    response_model=ReleaseRead,
    responses=responses(*WRITE, 502),
)
async def preview_release(
    request: Request, services: ServicesDep, bearer: BearerDep, body: PreviewReleaseInput
) -> JSONResponse:
    """Create a release and its preview."""
    return await invoke_as(request, services, bearer, "preview_release", body, status_code=201)


@router.get("/releases/{release_id}", response_model=ReleaseRead, responses=responses(*READ))
async def get_release(
    request: Request,
    services: ServicesDep,
    bearer: BearerDep,
    release_id: ReleasePath,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_WAIT_SECONDS,
            description="With `while_state`: seconds to wait for the release to leave those "
            "states before answering (a long-poll; 0 answers at once).",
        ),
    ] = 0,
    while_state: Annotated[
        list[State] | None,
        Query(description="States to wait through, e.g. `approved` and `applying`."),
    ] = None,
) -> JSONResponse:
    """One release; with `wait` and `while_state`, once it has left those states."""
    if wait > 0 and while_state:
        label_request(request.scope, WAITING_READ)
        states = {s.value for s in while_state}
        return await read_when_moved(services, bearer, release_id, states, wait, request.receive)
    return await invoke_read(services, bearer, "get_release", {"release_id": release_id})


@router.get("/releases/{release_id}/timeline", response_model=Timeline, responses=responses(*READ))
async def release_timeline(
    services: ServicesDep, bearer: BearerDep, release_id: ReleasePath
) -> JSONResponse:
    """Audit events and runtime progress of one release, in order."""
    return await invoke_read(services, bearer, "release_timeline", {"release_id": release_id})


@router.post(
    "/releases/{release_id}/preview",
    response_model=ReleaseRead,
    responses=responses(*WRITE, 502),
)
def repreview_release(
    request: Request, services: ServicesDep, actor: ActorDep, release_id: ReleasePath
) -> JSONResponse:
    """Re-preview a release, keeping its id."""
    return invoke(request, services, actor, "repreview_release", {"release_id": release_id})


@router.post(
    "/releases/{release_id}/submit", response_model=ReleaseRead, responses=responses(*WRITE)
)
async def submit_release(
    request: Request, services: ServicesDep, bearer: BearerDep, release_id: ReleasePath
) -> JSONResponse:
    """Submit a previewed release to policy."""
    args = {"release_id": release_id}
    return await invoke_as(request, services, bearer, "submit_release", args)


@router.post(
    "/releases/{release_id}/apply",
    status_code=202,
    response_model=ReleaseRead,
    responses=responses(*WRITE, 502),
)
async def apply_release(
    request: Request, services: ServicesDep, bearer: BearerDep, release_id: ReleasePath
) -> JSONResponse:
    """Start applying an approved release; poll it or its timeline for the outcome."""
    args = {"release_id": release_id}
    return await invoke_as(request, services, bearer, "apply_release", args, status_code=202)


@router.post(
    "/releases/{release_id}/cancel", response_model=ReleaseRead, responses=responses(*WRITE)
)
async def cancel_release(
    request: Request,
    services: ServicesDep,
    bearer: BearerDep,
    release_id: ReleasePath,
    body: CancelBody = Body(default_factory=CancelBody),
) -> JSONResponse:
    """Cancel a release that has not started applying."""
    args = {"release_id": release_id, "reason": body.reason}
    return await invoke_as(request, services, bearer, "cancel_release", args)


@router.post(
    "/rollbacks", status_code=201, response_model=ReleaseRead, responses=responses(*WRITE, 502)
)
def rollback_release(
    request: Request, services: ServicesDep, actor: ActorDep, body: RollbackReleaseInput
) -> JSONResponse:
    """Preview a rollback of a target to an earlier applied revision."""
    return invoke(request, services, actor, "rollback_release", body, status_code=201)
