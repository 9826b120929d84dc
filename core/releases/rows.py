"""Releases and previews as plain rows, for the views pages build.

A page of 50 releases as ORM entities was ~250 objects with identity-map bookkeeping and
relationship loading: about a quarter of a read's CPU. These loaders select only the columns
the views read and return small immutable records shaped like the entities
(`release.project.name`, `release.target.environment`), so `views.view` builds the same answer
from either (core.approvals.rows does the same for tickets). The records are named tuples
built by position from Core rows: a frozen dataclass built from a row's mapping cost ~20 us a
release, a fifth of a page.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from functools import cache, lru_cache
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Select, bindparam, func, select
from sqlalchemy.orm import Session, aliased

from core.db import AnyRow, OneOf, among, among_values, plain_rows, utcnow, written
from core.identity.models import User
from core.releases.models import Preview, Release
from core.targets.frozen import FreezeRow, longest_freeze
from core.targets.models import Freeze, Project, Target


class Named(NamedTuple):
    """A project or user as a view names it."""

    name: str


class TargetRow(NamedTuple):
    """The target columns views read."""

    id: int
    project_id: int
    environment: str
    runtime: str
    risk_tier: str
    windows: list[dict[str, Any]]
    approval_timeout_seconds: int | None
    freeze: FreezeRow | None  # the longest ad-hoc freeze holding it when read


class ReleaseRow(NamedTuple):
    """A release with its project, target and requester, as one joined row."""

    number: int
    project_id: int
    target_id: int
    kind: str
    changes: dict[str, Any]
    lifecycle_state: str
    version: int
    requested_by_id: int
    channel: str
    emergency: bool
    rollback_of: int | None
    expired_from: str | None
    reason: str | None
    applied_spec: dict[str, Any] | None
    queued_at: datetime | None
    retry_of: int | None
    created_at: datetime
    updated_at: datetime
    project: Named
    target: TargetRow
    requested_by: Named
    preview: PreviewRow | None  # the newest one


class PreviewRow(NamedTuple):
    """The preview columns views read."""

    release_number: int
    desired: dict[str, Any]
    diff: dict[str, Any]
    diff_hash: str
    base_fingerprint: str
    risk_level: str
    risk_reasons: list[str]
    created_at: datetime
    expires_at: datetime


_Requester = aliased(User, name="requester")
_Newest = aliased(Preview, name="newest_preview")
_Active = aliased(Freeze, name="active_freeze")

RELEASE_COLUMNS = (
    Release.number,
    Release.project_id,
    Release.target_id,
    Release.kind,
    Release.changes,
    Release.lifecycle_state,
    Release.version,
    Release.requested_by_id,
    Release.channel,
    Release.emergency,
    Release.rollback_of,
    Release.expired_from,
    Release.reason,
    Release.applied_spec,
    Release.queued_at,
    Release.retry_of,
    Release.created_at,
    Release.updated_at,
    Project.name.label("project_name"),
    Target.environment,
    Target.runtime,
    Target.risk_tier,
    Target.windows,
    Target.approval_timeout_seconds,
    _Requester.name.label("requester_name"),
    _Newest.id.label("preview_id"),
    _Newest.desired.label("preview_desired"),
    _Newest.diff.label("preview_diff"),
    _Newest.diff_hash.label("preview_diff_hash"),
    _Newest.base_fingerprint.label("preview_base_fingerprint"),
    _Newest.risk_level.label("preview_risk_level"),
    _Newest.risk_reasons.label("preview_risk_reasons"),
    _Newest.created_at.label("preview_created_at"),
    _Newest.expires_at.label("preview_expires_at"),
    _Active.reason.label("freeze_reason"),
    _Active.until.label("freeze_until"),
    _Active.created_by.label("freeze_created_by"),
)


@cache
def release_select() -> Select[Any]:
    """SELECT of release rows joined with project, target, requester (`requester` alias),
    newest preview and the longest freeze holding the target at bound parameter `now` (bind
    `as_of_now()`): the views' whole release in one statement.

    Built once: statements are immutable, and one reused object keeps its cache key
    (building and keying a statement cost about as much CPU as running it).
    """
    older = aliased(Preview, name="older")
    newest = (
        select(func.max(older.id))
        .where(older.release_number == Release.number)
        .correlate(Release)
        .scalar_subquery()
    )
    return (
        select(*RELEASE_COLUMNS)
        .join(Project, Project.id == Release.project_id)
        .join(Target, Target.id == Release.target_id)
        .join(_Requester, _Requester.id == Release.requested_by_id)
        .outerjoin(_Newest, _Newest.id == newest)
        .outerjoin(_Active, _Active.id == longest_freeze(Release.project_id, Target.environment))
    )


@cache
def _by_number(one: bool) -> Select[Any]:
    return release_select().where(among(Release.number, "numbers", one))


@cache
def _newest_previews() -> Select[Any]:
    newest = (
        select(func.max(Preview.id))
        .where(OneOf(Preview.release_number, "numbers"))
        .group_by(Preview.release_number)
    )
    return select(
        Preview.release_number,
        Preview.desired,
        Preview.diff,
        Preview.diff_hash,
        Preview.base_fingerprint,
        Preview.risk_level,
        Preview.risk_reasons,
        Preview.created_at,
        Preview.expires_at,
    ).where(Preview.id.in_(newest))


# A releases page's filters, each on the bound parameter of its name.
PAGE_FILTERS: dict[str, Callable[[], ColumnElement[bool]]] = {
    "since": lambda: Release.created_at >= bindparam("since"),
    "until": lambda: Release.created_at < bindparam("until"),
    "requester": lambda: _Requester.name == bindparam("requester"),
    "project": lambda: Release.project_id == bindparam("project"),
    "environment": lambda: Target.environment == bindparam("environment"),
    "state": lambda: Release.lifecycle_state == bindparam("state"),
    "before": lambda: Release.number < bindparam("before"),
    "visible": lambda: OneOf(Release.project_id, "visible"),
}


@lru_cache(maxsize=512)
def page_select(filters: tuple[str, ...], limit: int) -> Select[Any]:
    """A releases page, newest first, with these `PAGE_FILTERS` (values bound at execution).

    One statement per filter set and size, built once: a page usually comes with the same few
    filters, and a reused statement keeps its cache key.
    """
    query = release_select().where(*(PAGE_FILTERS[name]() for name in filters))
    return query.order_by(Release.number.desc()).limit(written(limit))


def release_rows_by_number(session: Session, numbers: Iterable[int]) -> dict[int, ReleaseRow]:
    """These releases, by number, in one statement."""
    one, values = among_values(list(numbers))
    rows = plain_rows(session, _by_number(one), {"numbers": values, **as_of_now()})
    return {row[0]: release_from(row) for row in rows}


def as_of_now() -> dict[str, datetime]:
    """The `now` parameter of a `release_select` query."""
    return {"now": utcnow()}


# Positions in RELEASE_COLUMNS: the release's own fields come first, in ReleaseRow's order.
_OWN = len(ReleaseRow._fields) - 4
_PREVIEW = _OWN + 7  # preview_id; the preview's fields follow in PreviewRow's order
_FREEZE = _PREVIEW + len(PreviewRow._fields)  # the freeze's fields, in FreezeRow's order
RELEASE_WIDTH = len(RELEASE_COLUMNS)  # a query may read more columns after these
assert [c.key for c in RELEASE_COLUMNS[:_OWN]] == list(ReleaseRow._fields[:_OWN])
assert [c.key for c in RELEASE_COLUMNS[_OWN:_PREVIEW]] == [
    "project_name",
    *TargetRow._fields[2:-1],
    "requester_name",
]
assert [c.key for c in RELEASE_COLUMNS[_PREVIEW:_FREEZE]] == ["preview_id"] + [
    "preview_" + f for f in PreviewRow._fields[1:]
]
assert [c.key for c in RELEASE_COLUMNS[_FREEZE:]] == ["freeze_" + f for f in FreezeRow._fields]


def release_from(row: AnyRow | tuple[Any, ...]) -> ReleaseRow:
    """The release in a `release_select` row (more columns may follow its own)."""
    fields = tuple(row)
    freeze = FreezeRow._make(fields[_FREEZE:RELEASE_WIDTH]) if fields[_FREEZE] is not None else None
    target = TargetRow(
        fields[2],
        fields[1],
        fields[19],
        fields[20],
        fields[21],
        fields[22] or [],
        fields[23],
        freeze,
    )
    preview = None
    if fields[_PREVIEW] is not None:
        preview = PreviewRow(fields[0], *fields[_PREVIEW + 1 : _FREEZE])
    return ReleaseRow._make((*fields[:_OWN], Named(fields[18]), target, Named(fields[24]), preview))


def latest_preview_rows(session: Session, numbers: list[int]) -> dict[int, PreviewRow]:
    """The newest preview of each release, in one statement."""
    if not numbers:
        return {}
    rows = plain_rows(session, _newest_previews(), {"numbers": numbers})
    return {row[0]: PreviewRow(*row) for row in rows}
