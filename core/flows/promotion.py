"""Promotion order: a release to a later environment needs its images proven on the one before."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.audit.service import record
from core.errors import PermissionDenied, PromotionRefused
from core.ids import release_id
from core.permissions import Actor
from core.releases.lifecycle import State
from core.releases.models import Release
from core.releases.queries import current_preview
from core.targets.models import Target

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
