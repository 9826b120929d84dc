"""Do the state tables agree with the stream? Each release's state must be justified by events.

A release's `lifecycle_state` is a cached value; the audit stream is the history. A state is
explained when the last recorded transition of the release left it in that state, a state past
approval has the approvals its ticket needs (after the last submit, never the requester's), and
a state past apply has an apply event. Reads core.releases/approvals models, never writes.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session

from core.approvals.models import ApprovalTicket
from core.audit.models import AuditEvent, AuditHead
from core.audit.verify import Unexplained
from core.identity.models import User
from core.ids import parse_release_id, release_id
from core.releases.models import Release
from core.targets.models import Project

PAST_APPROVAL = frozenset(
    {"approved", "applying", "applied", "failed", "rolling_back", "rolled_back", "rollback_failed"}
)
PAST_APPLY = frozenset({"applying", "applied", "failed"})


@dataclass
class _Evidence:
    last_after: str | None = None
    last_submit: int = 0
    approvals: list[tuple[int, str]] = field(default_factory=list)
    applied: bool = False
    complete: bool = False  # its preview event is here: none of its history was archived
    imported: bool = False  # brought in from an older tool: its earlier history is not ours


def judge(
    state: str, evidence: _Evidence, requester: str, needed: int | None, archived: bool
) -> str | None:
    """Why `state` is not explained by the evidence, or None."""
    from core.releases.lifecycle import normalize_state

    archived = archived and not evidence.complete
    try:
        current = normalize_state(state).value
    except KeyError:
        return f"its state {state!r} is not a lifecycle state"
    if evidence.last_after is None:
        return None if archived else "no audit event records this release"
    if current != evidence.last_after:
        return f"it is {current}, but its last recorded transition left it {evidence.last_after}"
    if evidence.imported and current == evidence.last_after:
        return None  # the import event records the state the old tool left it in
    if current in PAST_APPROVAL and needed is not None and not archived:
        got = sum(
            1
            for seq, actor in evidence.approvals
            if seq > evidence.last_submit and actor != requester
        )
        if got < needed:
            return f"it is {current}, but the stream holds {got} of the {needed} approvals needed"
    if current in PAST_APPLY and not evidence.applied and not archived:
        return f"it is {current}, but the stream holds no apply event"
    return None


def _gather(rows: Any) -> dict[int, _Evidence]:
    found: dict[int, _Evidence] = defaultdict(_Evidence)
    for number, seq, action, after, actor in rows:
        evidence = found[number]
        if after is not None:
            evidence.last_after = after
            evidence.imported = evidence.imported and action == "import"
        if action == "preview":
            evidence.complete = True
        elif action == "import":
            evidence.complete = evidence.imported = True
        elif action == "submit":
            evidence.last_submit = seq
        elif action == "approve":
            evidence.approvals.append((seq, actor))
        elif action == "apply":
            evidence.applied = True
    return found


_EVENT_COLUMNS = (
    AuditEvent.release_number,
    AuditEvent.seq,
    AuditEvent.action,
    AuditEvent.after_state,
    AuditEvent.actor,
)


def _needed(steps: Any) -> int:
    if not isinstance(steps, list):
        return 1
    return sum(int(s.get("count", 1)) for s in steps if isinstance(s, dict)) or 1


def unexplained_releases(connection: Connection, *, archived: bool) -> list[Unexplained]:
    """Every release whose state the stream does not explain, in release order."""
    evidence = _gather(
        connection.execute(
            select(*_EVENT_COLUMNS)
            .where(AuditEvent.release_number.is_not(None))
            .order_by(AuditEvent.seq)
        )
    )
    latest = (
        select(func.max(ApprovalTicket.id))
        .group_by(ApprovalTicket.release_number)
        .scalar_subquery()
    )
    tickets: dict[int, Any] = dict(
        connection.execute(
            select(ApprovalTicket.release_number, ApprovalTicket.steps).where(
                ApprovalTicket.id.in_(latest)
            )
        ).all()
    )
    releases = connection.execute(
        select(Release.number, Release.lifecycle_state, User.name, Project.name)
        .join(User, User.id == Release.requested_by_id)
        .join(Project, Project.id == Release.project_id)
        .order_by(Release.number)
    )
    out: list[Unexplained] = []
    for number, state, requester, project in releases:
        needed = _needed(tickets[number]) if number in tickets else None
        why = judge(state, evidence.get(number, _Evidence()), requester, needed, archived)
        if why is not None:
            out.append(
                Unexplained(release_id=release_id(number), project=project, state=state, reason=why)
            )
    return out


def explain_state(session: Session, release: str | int) -> str | None:
    """Why the audit stream does not justify the release's current state, or None when it does.

    For transitions (e.g. apply) to refuse a state someone wrote into the table by hand.
    """
    number = parse_release_id(release)
    row = session.execute(
        select(Release.lifecycle_state, User.name)
        .join(User, User.id == Release.requested_by_id)
        .where(Release.number == number)
    ).first()
    if row is None:
        return None
    evidence = _gather(
        session.execute(
            select(*_EVENT_COLUMNS)
            .where(AuditEvent.release_number == number)
            .order_by(AuditEvent.seq)
        )
    ).get(number, _Evidence())
    steps = session.scalars(
        select(ApprovalTicket.steps)
        .where(ApprovalTicket.release_number == number)
        .order_by(ApprovalTicket.id.desc())
        .limit(1)
    ).first()
    head = session.get(AuditHead, 1)
    archived = head is not None and (head.base_seq or 0) > 0
    needed = _needed(steps) if steps is not None else None
    return judge(row[0], evidence, row[1], needed, archived)
