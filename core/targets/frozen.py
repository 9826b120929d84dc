"""Whether targets are frozen now, for many at once: one query whatever their count, or none
for targets read with their longest freeze (`longest_freeze`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import cache
from typing import Any, NamedTuple, Protocol

from sqlalchemy import ColumnElement, ScalarSelect, Select, bindparam, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from core.db import AnyRow, OneOf, plain_rows, utcnow, written
from core.targets.models import Freeze
from core.targets.schemas import FreezeInfo
from core.text import first_line
from core.windows import open_window


class TargetLike(Protocol):
    """What a freeze check reads of a target: an ORM Target or a plain row of one."""

    @property
    def id(self) -> int: ...
    @property
    def project_id(self) -> int: ...
    @property
    def environment(self) -> str: ...
    @property
    def windows(self) -> list[dict[str, Any]]: ...


class FreezeRow(NamedTuple):
    """The longest ad-hoc freeze holding a target, as read with it."""

    reason: str
    until: datetime
    created_by: str


class ReadTarget(TargetLike, Protocol):
    """A target row read with `longest_freeze` (None: no ad-hoc freeze held it)."""

    @property
    def freeze(self) -> FreezeRow | None: ...


def longest_freeze(
    project_id: ColumnElement[int] | InstrumentedAttribute[int],
    environment: ColumnElement[str] | InstrumentedAttribute[str],
) -> ScalarSelect[int]:
    """The id of the ad-hoc freeze `frozen_now` reports for a target (the longest active one
    on its project or environment at bound parameter `now`), as a correlated subquery: a page
    reads each target's with its release, not in a statement of its own."""
    return (
        select(Freeze.id)
        .where(
            Freeze.project_id == project_id,
            or_(Freeze.environment.is_(None), Freeze.environment == environment),
            Freeze.lifted_at.is_(None),
            Freeze.until > bindparam("now"),
        )
        .order_by(Freeze.until.desc(), Freeze.id)
        .limit(written(1))
        .scalar_subquery()
    )


def frozen_as_read(targets: Iterable[ReadTarget], now: datetime) -> dict[int, FreezeInfo]:
    """`frozen_now` of targets read with their longest freeze at `now`: no statement."""
    out: dict[int, FreezeInfo] = {}
    for target in targets:
        freeze = target.freeze
        info = _declared(freeze) if freeze is not None else _window(target, now)
        if info is not None:
            out[target.id] = info
    return out


def frozen_now(
    session: Session, targets: Iterable[TargetLike], now: datetime | None = None
) -> dict[int, FreezeInfo]:
    """What holds each frozen target (by id): the longest ad-hoc freeze, else an open deny
    window, else being outside every declared allow window. Unfrozen targets are absent."""
    by_id = {t.id: t for t in targets}
    if not by_id:
        return {}
    now = now or utcnow()
    projects = sorted({t.project_id for t in by_id.values()})
    freezes = plain_rows(session, _active_freezes(), {"projects": projects, "now": now})
    out: dict[int, FreezeInfo] = {}
    for target in by_id.values():
        info = _freeze(target, freezes) or _window(target, now)
        if info is not None:
            out[target.id] = info
    return out


@cache
def _active_freezes() -> Select[Any]:
    # built once (every page runs it; a reused statement keeps its cache key); columns only
    columns: tuple[Any, ...] = (
        Freeze.project_id,
        Freeze.environment,
        Freeze.reason,
        Freeze.until,
        Freeze.created_by,
    )
    return (
        select(*columns)
        .where(
            OneOf(Freeze.project_id, "projects"),
            Freeze.lifted_at.is_(None),
            Freeze.until > bindparam("now"),
        )
        .order_by(Freeze.until.desc(), Freeze.id)
    )


def _freeze(target: TargetLike, freezes: Sequence[AnyRow]) -> FreezeInfo | None:
    for freeze in freezes:
        if freeze.project_id == target.project_id and freeze.environment in (
            None,
            target.environment,
        ):
            return _declared(freeze)
    return None


def _declared(freeze: FreezeRow | AnyRow) -> FreezeInfo:
    return FreezeInfo(
        reason=first_line(freeze.reason),
        until=freeze.until,
        declared_by=freeze.created_by,
        window=None,
    )


def _window(target: TargetLike, now: datetime) -> FreezeInfo | None:
    windows = list(target.windows or [])
    opened = [(w, open_window(w, now)) for w in windows]
    for _, found in opened:
        if found is not None and found.kind == "deny":
            return FreezeInfo(
                reason=found.reason or "deny window",
                until=found.closes_at,
                declared_by=None,
                window=f"deny {found.cron} ({found.timezone})",
            )
    allows = [w for w, _ in opened if w["kind"] == "allow"]
    if allows and not any(o is not None for w, o in opened if w["kind"] == "allow"):
        crons = ", ".join(f"{w['cron']} ({w.get('timezone') or 'UTC'})" for w in allows)
        return FreezeInfo(
            reason="outside its change windows",
            until=None,
            declared_by=None,
            window=f"allow {crons}",
        )
    return None
