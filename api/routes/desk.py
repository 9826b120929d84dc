"""Release desk routes: retry, promote, submit with a promotion override, freezes.

Retry, promote and the freezes are registry tools (tools/desk.py): these routes run them
through the one path every door takes, so the rules, permissions and audit events are the
same as in chat and over MCP.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse

from api.deps import ActorDep, BearerDep, ServicesDep
from api.errors import READ, WRITE, responses
from api.invoke import invoke, invoke_read
from api.params import ReleasePath
from core.flows import submit
from core.ids import MAX_ID
from core.releases.schemas import ReleaseRead
from core.targets.schemas import FreezeRead
from tools.desk import DeclareFreezeInput, FreezeList, LiftedFreezes, ListFreezesInput, PromoteInput
from tools.registry import get_tool

router = APIRouter(prefix="/api/v1", tags=["release desk"])


@router.post(
    "/promotions", status_code=201, response_model=ReleaseRead, responses=responses(*WRITE)
)
def promote_release(
    request: Request, services: ServicesDep, actor: ActorDep, body: PromoteInput
) -> JSONResponse:
    """Preview a release of the images proven on `from_environment` to `to_environment`."""
    return invoke(request, services, actor, "promote_release", body, status_code=201)


@router.post(
    "/releases/{release_id}/retry",
    status_code=201,
    response_model=ReleaseRead,
    responses=responses(*WRITE),
)
def retry_release(
    request: Request, services: ServicesDep, actor: ActorDep, release_id: ReleasePath
) -> JSONResponse:
    """Preview a failed release's change again, as a new release (`retry_of` names it)."""
    return invoke(
        request, services, actor, "retry_release", {"release_id": release_id}, status_code=201
    )


@router.post(
    "/releases/{release_id}/submit-override",
    response_model=ReleaseRead,
    responses=responses(*WRITE),
)
def submit_with_promotion_override(
    services: ServicesDep, actor: ActorDep, release_id: ReleasePath
) -> ReleaseRead:
    """Submit a release whose images skipped the promotion order (admins; audited)."""
    with services.sessions() as session:
        return submit.submit_release(
            session,
            actor=actor,
            runner=services.runner,
            release=release_id,
            override_promotion=True,
        )


@router.get("/freezes", response_model=FreezeList, responses=responses(*READ))
async def list_freezes(
    services: ServicesDep, bearer: BearerDep, query: Annotated[ListFreezesInput, Query()]
) -> JSONResponse:
    """Freezes the caller can see, newest first (only those in force unless `active=false`)."""
    return await invoke_read(services, bearer, "list_freezes", query)


@router.post("/freezes", status_code=201, response_model=FreezeRead, responses=responses(*WRITE))
def declare_freeze(
    request: Request, services: ServicesDep, actor: ActorDep, body: DeclareFreezeInput
) -> JSONResponse:
    """Freeze a project's environment (admins and SRE): submit and apply refuse until then."""
    return invoke(request, services, actor, "declare_freeze", body, status_code=201)


@router.post("/freezes/{freeze_id}/lift", response_model=FreezeRead, responses=responses(*WRITE))
def lift_freeze(
    services: ServicesDep,
    actor: ActorDep,
    freeze_id: Annotated[int, Path(ge=1, le=MAX_ID, description="The freeze's id.")],
) -> FreezeRead:
    """End a freeze before its time (admins and SRE)."""
    lifted = get_tool("lift_freeze").run(services.context(actor), {"freeze_id": freeze_id})
    assert isinstance(lifted, LiftedFreezes)
    return lifted.items[0]
