"""Promotion order: a release to a later environment needs its images proven on the one before."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.audit.service import record
from core.errors import InvalidInput, PermissionDenied, PromotionRefused
from core.flows.preview import preview_release
from core.ids import parse_release_id, release_id
from core.permissions import Action, Actor, require
from core.releases.lifecycle import State
from core.releases.models import Release
from core.releases.queries import current_preview
from core.releases.schemas import ReleaseRead
from core.targets.models import Target
from core.targets.service import (
    adapter_for,
    call_runtime,
    get_target,
    target_ref,
    unknown_service,
)
from runtimes.base import ServiceChange
from runtimes.registry import RuntimeRegistry

# States whose release was applied successfully at some point.
PROVEN = (State.applied.value, State.rolled_back.value, State.rollback_failed.value)
HISTORY = 500


def unproven_images(session: Session, release: Release) -> tuple[str | None, list[str]]:
    """The previous environment in the order and the images never applied there."""
    order = release.project.promotion or []
    env = release.target.environment
    if release.kind != "deploy" or env not in order or order.index(env) == 0:
        return None, []
    previous = order[order.index(env) - 1]
    preview = current_preview(session, release.number)
    if preview is None:
        return previous, []
    wanted = {
        service: str(spec["image"])
        for service, spec in preview.desired.items()
        if "image" in (preview.diff.get(service) or {})
    }
    if not wanted:
        return previous, []
    before = session.scalars(
        select(Target.id).where(
            Target.project_id == release.project_id, Target.environment == previous
        )
    ).first()
    seen: set[tuple[str, str]] = set()
    if before is not None:
        for spec in session.scalars(
            select(Release.applied_spec)
            .where(Release.target_id == before, Release.lifecycle_state.in_(PROVEN))
            .order_by(Release.number.desc())
            .limit(HISTORY)
        ):
            for service, applied in (spec or {}).items():
                seen.add((service, str(applied.get("image"))))
    missing = [f"{s}: {image}" for s, image in sorted(wanted.items()) if (s, image) not in seen]
    return previous, missing


def check_promotion(
    session: Session, release: Release, actor: Actor, *, override: bool = False
) -> None:
    """Refuse a release whose images skip the promotion order; an admin may override (audited).

    The override is kept on the release, so its apply is not refused again.
    """
    if release.promotion_override_by is not None:
        return
    previous, missing = unproven_images(session, release)
    if not missing:
        return
    where = f"{release.project.name}/{release.target.environment}"
    if not override:
        raise PromotionRefused(
            f"{release_id(release.number)} cannot go to {where}: never applied on "
            f"{previous}: {', '.join(missing)} (promotion order "
            f"{' -> '.join(release.project.promotion or [])}; an admin may override)",
            release_id=release_id(release.number),
            previous=previous,
            missing=missing,
        )
    if not actor.is_admin:
        raise PermissionDenied("only an admin may override the promotion order")
    release.promotion_override_by = actor.name
    record(
        session,
        actor=actor,
        action="promotion_override",
        project=release.project.name,
        release_number=release.number,
        data={"previous": previous, "missing": missing},
    )


def promote_release(
    session: Session,
    *,
    actor: Actor,
    runtimes: RuntimeRegistry,
    project: str,
    source: str,
    destination: str,
    services: list[str] | None = None,
) -> ReleaseRead:
    """Preview a release taking to `destination` the images last applied on `source`.

    "promote web from staging to prod": one call. Only images proven on the source (its newest
    successful apply of each service) travel; services already running them are left out.
    With a promotion order, the source must be the environment just before. Commits.
    """
    origin = get_target(session, project, source)
    target = get_target(session, project, destination, services=True)
    require(actor, Action.request, target.project_id, target.project.name)
    if origin.id == target.id:
        raise InvalidInput("promote from one environment to another")
    order = target.project.promotion or []
    if order and (
        target.environment not in order
        or order.index(target.environment) == 0
        or order[order.index(target.environment) - 1] != origin.environment
    ):
        raise InvalidInput(
            f"{target.project.name} promotes {' -> '.join(order)}: {target.environment} does "
            f"not come right after {origin.environment}",
            promotion=order,
        )
    known = [s.name for s in target.project.services]
    for name in services or []:
        if name not in known:
            raise unknown_service(target.project.name, name, known)
    proven: dict[str, str] = {}
    for spec in session.scalars(
        select(Release.applied_spec)
        .where(Release.target_id == origin.id, Release.lifecycle_state.in_(PROVEN))
        .order_by(Release.number.desc())
        .limit(HISTORY)
    ):
        for service, applied in (spec or {}).items():
            if applied.get("image") and service not in proven:
                proven[service] = str(applied["image"])
    wanted = {s: image for s, image in proven.items() if not services or s in services}
    where = f"{target.project.name}/{origin.environment}"
    if not wanted:
        raise InvalidInput(f"nothing was ever applied on {where} to promote")
    missing = sorted(set(services or []) - set(wanted))
    if missing:
        raise InvalidInput(f"never applied on {where}: {', '.join(missing)}", services=missing)
    adapter, ref = adapter_for(runtimes, target), target_ref(target)
    session.commit()  # never hold a transaction while a runtime is called
    live = call_runtime("read the live state", lambda: adapter.describe(ref))
    changes = {
        s: ServiceChange(image=image)
        for s, image in sorted(wanted.items())
        if s not in live.services or live.services[s].image != image
    }
    if not changes:
        raise InvalidInput(
            f"{target.project.name}/{target.environment} already runs what {origin.environment} "
            "runs",
            images=wanted,
        )
    read = preview_release(
        session,
        actor=actor,
        runtimes=runtimes,
        project=target.project.name,
        environment=target.environment,
        changes=changes,
    )
    record(
        session,
        actor=actor,
        action="promote",
        project=target.project.name,
        release_number=parse_release_id(read.id),
        data={"from": origin.environment, "to": target.environment, "images": wanted},
    )
    session.commit()
    return read
