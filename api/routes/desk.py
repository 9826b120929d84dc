"""Release desk routes: retry, promote, submit with a promotion override, freezes.

These call core directly (they are not registry tools): the rules, permissions and audit
events are core's, as for every door.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from api.deps import ActorDep, ServicesDep
from api.errors import READ, WRITE, responses
from api.params import ReleasePath
from core.flows import freezes, promotion, retry, submit
from core.releases.schemas import ReleaseRead
from core.targets.schemas import FreezeRead

router = APIRouter(prefix="/api/v1", tags=["release desk"])


class FreezeBody(BaseModel):
    """An ad-hoc freeze: one environment of a project (or all of them) until a time."""

    model_config = ConfigDict(extra="forbid")

    project: str = Field(max_length=64)
    environment: str | None = Field(default=None, max_length=32)
    until: datetime = Field(description="With a time zone, e.g. 2026-12-01T09:00:00+01:00.")
    reason: str = Field(min_length=1, max_length=500)


class PromoteBody(BaseModel):
    """Take the images last applied on one environment to the next."""

    model_config = ConfigDict(extra="forbid")

    project: str = Field(max_length=64)
    from_environment: str = Field(max_length=32)
    to_environment: str = Field(max_length=32)
    services: list[str] | None = Field(default=None, max_length=50)


class FreezeList(BaseModel):
    """Freezes, newest first."""

    items: list[FreezeRead]


@router.post(
    "/promotions", status_code=201, response_model=ReleaseRead, responses=responses(*WRITE)
)
def promote_release(services: ServicesDep, actor: ActorDep, body: PromoteBody) -> ReleaseRead:
    """Preview a release of the images proven on `from_environment` to `to_environment`."""
    with services.sessions() as session:
        return promotion.promote_release(
            session,
            actor=actor,
            runtimes=services.runtimes,
            project=body.project,
            source=body.from_environment,
            destination=body.to_environment,
            services=body.services,
        )


@router.post(
    "/releases/{release_id}/retry",
    status_code=201,
    response_model=ReleaseRead,
    responses=responses(*WRITE),
)
def retry_release(services: ServicesDep, actor: ActorDep, release_id: ReleasePath) -> ReleaseRead:
    """Preview a failed release's change again, as a new release (`retry_of` names it)."""
    with services.sessions() as session:
        return retry.retry_release(
            session, actor=actor, runtimes=services.runtimes, release=release_id
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
def list_freezes(
    services: ServicesDep, actor: ActorDep, project: str | None = None, active: bool = True
) -> FreezeList:
    """Freezes the caller can see, newest first (only those in force unless `active=false`)."""
    with services.sessions() as session:
        return FreezeList(
            items=freezes.list_freezes(session, actor=actor, project=project, active=active)
        )


@router.post("/freezes", status_code=201, response_model=FreezeRead, responses=responses(*WRITE))
def freeze_changes(services: ServicesDep, actor: ActorDep, body: FreezeBody) -> FreezeRead:
    """Freeze a project's environment (admins and SRE): submit and apply refuse until then."""
    with services.sessions() as session:
        return freezes.freeze_changes(
            session,
            actor=actor,
            project=body.project,
            environment=body.environment,
            until=body.until,
            reason=body.reason,
        )


@router.post("/freezes/{freeze_id}/lift", response_model=FreezeRead, responses=responses(*WRITE))
def lift_freeze(services: ServicesDep, actor: ActorDep, freeze_id: int) -> FreezeRead:
    """End a freeze before its time (admins and SRE)."""
    with services.sessions() as session:
        return freezes.lift_freeze(session, actor=actor, freeze_id=freeze_id)
