"""The release lifecycle: the transition table, legacy names and the one transition()."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Any

from sqlalchemy import ClauseElement, Update, bindparam, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from core.audit.service import record
from core.db import as_stored, utcnow
from core.errors import IllegalTransition, StateChanged
from core.events import LiveEvent, queue_event
from core.ids import release_id
from core.permissions import Actor
from core.releases.models import Release


class State(StrEnum):
    """The only lifecycle states (API field `lifecycle_state`)."""

    previewed = "previewed"
    pending_approval = "pending_approval"
    approved = "approved"
    rejected = "rejected"
    cancelled = "cancelled"
    expired = "expired"
    applying = "applying"
    applied = "applied"
    failed = "failed"
    rolling_back = "rolling_back"
    rolled_back = "rolled_back"
    rollback_failed = "rollback_failed"


S = State
WAITING = (S.previewed, S.pending_approval, S.approved)
TERMINAL = frozenset(
    {S.rejected, S.cancelled, S.applied, S.failed, S.rolled_back, S.rollback_failed}
)

# (from, action) -> the states the action may lead to.
TRANSITIONS: dict[tuple[State, str], frozenset[State]] = {
    (S.previewed, "submit"): frozenset({S.pending_approval, S.approved}),
    (S.pending_approval, "approve"): frozenset({S.approved}),
    (S.pending_approval, "reject"): frozenset({S.rejected}),
    **{(s, "cancel"): frozenset({S.cancelled}) for s in WAITING},
    **{(s, "expire"): frozenset({S.expired}) for s in WAITING},
    # Re-preview keeps the state when the diff is unchanged, or voids approvals.
    (S.previewed, "repreview"): frozenset({S.previewed}),
    (S.pending_approval, "repreview"): frozenset({S.pending_approval, S.previewed}),
    (S.approved, "repreview"): frozenset({S.approved, S.previewed}),
    (S.expired, "repreview"): frozenset(WAITING),
    (S.approved, "apply"): frozenset({S.applying}),
    (S.applying, "applied"): frozenset({S.applied}),
    (S.applying, "fail"): frozenset({S.failed}),
    (S.applying, "abandon"): frozenset({S.failed}),
    (S.applied, "rollback"): frozenset({S.rolling_back}),
    (S.failed, "rollback"): frozenset({S.rolling_back}),
    (S.rolling_back, "rolled_back"): frozenset({S.rolled_back}),
    (S.rolling_back, "rollback_fail"): frozenset({S.rollback_failed}),
}

ACTIONS = sorted({action for _, action in TRANSITIONS})

# States written by older modules, read as today's vocabulary.
LEGACY_STATES: dict[str, State] = {
    "draft": S.previewed,
    "preview": S.previewed,
    "pending": S.pending_approval,
    "awaiting_approval": S.pending_approval,
    "ready": S.approved,
    "queued": S.approved,
    "running": S.applying,
    "in_progress": S.applying,
    "deploying": S.applying,
    "success": S.applied,
    "succeeded": S.applied,
    "done": S.applied,
    "error": S.failed,
    "errored": S.failed,
    "denied": S.rejected,
    "aborted": S.cancelled,
    "timeout": S.expired,
    "reverting": S.rolling_back,
    "reverted": S.rolled_back,
}


_STORED = {**{s.value: s for s in State}, **LEGACY_STATES}


def normalize_state(value: str) -> State:
    """Read a stored state, mapping legacy names onto the lifecycle vocabulary."""
    return _STORED[value]  # a dict lookup: pages call this several times per row


def allowed(current: str, action: str) -> frozenset[State]:
    """The states `action` may lead to from `current` (empty when not allowed)."""
    return TRANSITIONS.get((normalize_state(current), action), frozenset())


@dataclass(frozen=True)
class Step:
    """One transition that just happened, as its after-transition hooks see it."""

    session: Session
    release: Release
    before: State
    to: State
    action: str
    actor: Actor


@dataclass(frozen=True)
class _Hook:
    sources: frozenset[State] | None
    targets: frozenset[State] | None
    run: Callable[[Step], None]

    def matches(self, before: State, to: State) -> bool:
        return (self.sources is None or before in self.sources) and (
            self.targets is None or to in self.targets
        )


_AFTER: list[_Hook] = []


def after(
    *, sources: Iterable[State] | None = None, targets: Iterable[State] | None = None
) -> Callable[[Callable[[Step], None]], Callable[[Step], None]]:
    """Register a side effect of transitions from `sources` to `targets` (None: any).

    Hooks run inside the transition's transaction, after its state and audit event are
    written, so they commit or roll back with it. The package a side effect belongs to owns
    its hook (tickets follow their release in core.approvals.hooks), and releases need not
    know about it.
    """

    def register(fn: Callable[[Step], None]) -> Callable[[Step], None]:
        _AFTER.append(
            _Hook(
                frozenset(sources) if sources is not None else None,
                frozenset(targets) if targets is not None else None,
                fn,
            )
        )
        return fn

    return register


def transition(
    session: Session,
    release: Release,
    *,
    action: str,
    to: State,
    actor: Actor,
    data: dict[str, Any] | None = None,
    values: dict[str, Any] | None = None,
    claimed_by: str | None = None,
) -> None:
    """Move a release to `to` by compare-and-set on its version, with its audit event.

    Runs in the caller's transaction: the state and the audit event commit together, and the
    live event is published only after that commit. `claimed_by` fences a runner's write: it
    only lands while that worker still holds the release's claim.
    """
    before = normalize_state(release.lifecycle_state)
    if to not in allowed(before, action):
        raise illegal_transition(release, action, before)
    now = utcnow()
    changes: dict[str, Any] = {"lifecycle_state": to.value, "version": release.version + 1}
    changes["updated_at"] = now
    changes.update(values or {})
    params: dict[str, Any] = {"at_number": release.number, "at_version": release.version}
    if claimed_by is not None:
        params["at_claimed_by"] = claimed_by
    # Bound as typed parameters of a statement built once per set of columns: plain values
    # only (an SQL expression such as func.now() would be bound as a value and refused).
    assert not any(isinstance(v, ClauseElement) for v in changes.values()), changes
    params.update((f"new_{key}", value) for key, value in changes.items())
    result = session.execute(_compare_and_set(tuple(changes), claimed_by is not None), params)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        # Lost the compare-and-set: someone else moved the release since it was read. Saying
        # "R-n is approved; cancel needs one of: approved" would name an allowed state.
        read = release.version
        session.refresh(release)
        raise state_changed(release, action, read, fenced=claimed_by is not None)
    for key, value in changes.items():  # as stored: the answer may be built from this object
        set_committed_value(release, key, as_stored(Release, key, value))
    record(
        session,
        actor=actor,
        action=action,
        project=release.project.name,
        release_number=release.number,
        before=before.value,
        after=to.value,
        data=data,
    )
    queue_event(
        session,
        release_event(
            release,
            "release_update",
            {"action": action, "before": before.value, "actor": actor.name, **(data or {})},
        ),
    )
    for hook in _AFTER:
        if hook.matches(before, to):
            hook.run(Step(session, release, before, to, action, actor))


@cache
def _compare_and_set(keys: tuple[str, ...], fenced: bool) -> Update:
    """A transition's UPDATE of these columns, built once (every write moves a release)."""
    columns = sa_inspect(Release).columns
    where = [Release.number == bindparam("at_number"), Release.version == bindparam("at_version")]
    if fenced:
        where.append(Release.claimed_by == bindparam("at_claimed_by"))
    return (
        update(Release)
        .where(*where)
        .values({key: bindparam(f"new_{key}", type_=columns[key].type) for key in keys})
        .execution_options(synchronize_session=False)
    )


def release_event(release: Release, kind: str, data: dict[str, Any]) -> LiveEvent:
    """A live event about a release, in its current state."""
    return LiveEvent(
        kind=kind,
        release_id=release_id(release.number),
        project=release.project.name,
        environment=release.target.environment,
        lifecycle_state=normalize_state(release.lifecycle_state).value,
        at=utcnow(),
        data=data,
    )


def state_changed(release: Release, action: str, read: int, *, fenced: bool) -> StateChanged:
    """The typed error for a transition whose release moved on under the call."""
    current = normalize_state(release.lifecycle_state).value
    rid = release_id(release.number)
    why = "its claim moved to another worker" if fenced and release.version == read else ""
    return StateChanged(
        f"{rid} changed while {action} ran (now {current}"
        + (f"; {why}" if why else "")
        + f"): nothing was done; reload {rid} and try again if {action} still applies",
        current=current,
        release_id=rid,
        action=action,
        read_version=read,
        version=release.version,
    )


def illegal_transition(
    release: Release, action: str, current: State, sources: list[str] | None = None
) -> IllegalTransition:
    """The typed error for `action` on a release in `current`, naming the allowed sources."""
    sources = sources or sorted(s.value for (s, a) in TRANSITIONS if a == action)
    return IllegalTransition(
        f"{release_id(release.number)} is {current.value}; {action} needs one of: "
        + ", ".join(sources),
        current=current.value,
        release_id=release_id(release.number),
        action=action,
    )
