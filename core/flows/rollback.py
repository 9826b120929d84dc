"""Rollback: a new release whose desired state is an earlier applied revision."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import (
    InvalidInput,
)
from core.flows.preview import preview_release
from core.ids import release_id
from core.permissions import Action, Actor, require
from core.releases.lifecycle import (
    State,
)
from core.releases.models import Release
from core.releases.queries import load_release
from core.releases.schemas import (
    ReleaseRead,
)
from core.targets.service import get_target
from runtimes.base import (
    ServiceChange,
)
from runtimes.registry import RuntimeRegistry

if TYPE_CHECKING:
    pass


def rollback_release(
    session: Session,
    *,
    actor: Actor,
    runtimes: RuntimeRegistry,
    project: str,
    environment: str,
    to_release: str | None = None,
    emergency: bool = False,
) -> ReleaseRead:
    """Preview a rollback: a new release whose desired state is an earlier applied revision.

    Without `to_release` the newest applied (or failed) release is undone back to the live
    state it replaced. The rollback then goes through the same policy as any release. Commits.
    """
    target = get_target(session, project, environment)
    require(actor, Action.request, target.project_id, target.project.name)
    undone = session.scalars(
        select(Release)
        .where(
            Release.target_id == target.id,
            Release.lifecycle_state.in_([State.applied.value, State.failed.value]),
        )
        .order_by(Release.number.desc())
        .limit(1)
    ).first()
    if undone is None:
        raise InvalidInput(
            f"nothing to roll back on {target.project.name}/{target.environment}: "
            "no applied or failed release"
        )
    if to_release is None:
        desired = undone.base_spec or {}
    else:
        base = load_release(session, to_release)
        if base.target_id != target.id or not base.applied_spec:
            raise InvalidInput(
                f"{release_id(base.number)} was never applied on "
                f"{target.project.name}/{target.environment}",
                release_id=release_id(base.number),
            )
        desired = base.applied_spec
    services = [s for s in desired if s in set(undone.services_key.split(","))] or list(desired)
    changes = {
        s: ServiceChange(
            image=desired[s].get("image"),
            replicas=desired[s].get("replicas"),
            env=desired[s].get("env"),
        )
        for s in services
    }
    return preview_release(
        session,
        actor=actor,
        runtimes=runtimes,
        project=target.project.name,
        environment=target.environment,
        changes=changes,
        emergency=emergency,
        kind="rollback",
        rollback_of=undone.number,
    )
