"""Bringing in releases written by older tools: their states mapped, each row audited.

A row's old state name maps onto the lifecycle through the one table in
`core.releases.lifecycle`; names that could mean two states there (`timeout`, `queued`) are
decided from what the row itself says, and reported as ambiguous when it says nothing,
never guessed.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.approvals.tickets import open_ticket
from core.audit.service import record
from core.errors import NotFound
from core.identity.service import ensure_user
from core.ids import release_id
from core.permissions import Actor
from core.policy import decide
from core.releases.lifecycle import State, normalize_state
from core.releases.models import Release
from core.targets.parts import take_declaration_lock
from core.targets.service import get_target
from core.text import clip
from runtimes.base import ServiceSpec

# Old names that mean two things (timed out deploying or waiting; queued to deploy or for
# approval): the state they take when the row shows it had started or been approved.
CONTEXTUAL: dict[str, State] = {"timeout": State.failed, "queued": State.approved}


class LegacyRow(BaseModel):
    """One release row of an older tool (JSONL, one object per line)."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(max_length=128)
    project: str = Field(max_length=64)
    environment: str = Field(max_length=64)
    state: str = Field(max_length=64)
    services: dict[str, ServiceSpec]
    actor: str = Field(max_length=64)
    created_at: datetime
    updated_at: datetime | None = None
    started_at: datetime | None = None  # set when a deploy began: the row shows it ran
    approved_by: str | None = Field(default=None, max_length=64)
    reason: str | None = None


class RowReport(BaseModel):
    """What happened (or would happen) to one line of the file."""

    line: int
    legacy_id: str | None = None
    state: str | None = None
    release_id: str | None = None
    problem: str | None = None


class LegacyReport(BaseModel):
    """The replay check of a file, and what was imported."""

    imported: list[RowReport] = Field(default_factory=list)
    ambiguous: list[RowReport] = Field(default_factory=list)
    invalid: list[RowReport] = Field(default_factory=list)


def map_state(row: LegacyRow) -> State | None:
    """The lifecycle state of a row, or None when its old name is ambiguous for it."""
    name = row.state.strip().lower()
    if name in CONTEXTUAL:
        shown = row.started_at is not None or (name == "queued" and row.approved_by is not None)
        return CONTEXTUAL[name] if shown else None  # the row does not say: report, never guess
    try:
        return normalize_state(name)
    except KeyError:
        return None


def import_legacy(
    session: Session, *, actor: Actor, lines: list[str], write: bool, skip_ambiguous: bool
) -> LegacyReport:
    """Check every line; with `write`, import the rows (all, or all but ambiguous ones).

    Nothing is written when any row is invalid, or ambiguous without `skip_ambiguous`.
    Two imports at once end as two in a row: with `write`, the second waits for the first
    (the declaration lock, core/targets/parts.py) before it reads what is imported already.
    """
    if write:
        take_declaration_lock(session)
    report = LegacyReport()
    rows: list[tuple[int, LegacyRow, State]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = LegacyRow.model_validate(json.loads(line))
            get_target(session, row.project, row.environment)
        except (ValueError, ValidationError, NotFound) as exc:
            report.invalid.append(RowReport(line=number, problem=clip(str(exc), 300)))
            continue
        state = map_state(row)
        if state is None:
            report.ambiguous.append(
                RowReport(
                    line=number,
                    legacy_id=row.id,
                    problem=f"state {row.state!r} could mean several lifecycle states here",
                )
            )
            continue
        if _already_imported(session, row.id):
            continue  # a second run of the same file imports nothing twice
        rows.append((number, row, state))
    blocked = report.invalid or (report.ambiguous and not skip_ambiguous)
    for number, row, state in rows:
        entry = RowReport(line=number, legacy_id=row.id, state=state.value)
        if write and not blocked:
            entry.release_id = release_id(_insert(session, actor, row, state))
        report.imported.append(entry)
    if write and not blocked:
        session.commit()
    else:
        session.rollback()
    return report


def _already_imported(session: Session, legacy_id: str) -> bool:
    from core.audit.models import AuditEvent

    found = session.scalars(
        select(AuditEvent.seq).where(
            AuditEvent.action == "import", AuditEvent.data["legacy_id"].as_string() == legacy_id
        )
    ).first()
    return found is not None


def _insert(session: Session, actor: Actor, row: LegacyRow, state: State) -> int:
    target = get_target(session, row.project, row.environment)
    requester = ensure_user(session, row.actor)
    specs = {name: spec.model_dump() for name, spec in row.services.items()}
    release = Release(
        project_id=target.project_id,
        target_id=target.id,
        kind="deploy",
        changes={name: _change(spec) for name, spec in row.services.items()},
        services_key=",".join(sorted(row.services)),
        lifecycle_state=state.value,
        version=1,
        requested_by_id=requester.id,
        channel="import",
        reason=row.reason,
        applied_spec=specs if state in (State.applied, State.rolled_back) else None,
        created_at=row.created_at,
        updated_at=row.updated_at or row.created_at,
    )
    session.add(release)
    session.flush()
    data: dict[str, Any] = {"legacy_id": row.id, "legacy_state": row.state}
    if state == State.pending_approval:  # waits in the one inbox like any release
        decision = decide(session, target=target)
        if decision.needs_approval:
            data["steps"] = open_ticket(session, release, decision, target.risk_tier).steps
    record(
        session,
        actor=actor,
        action="import",
        project=target.project.name,
        release_number=release.number,
        before=None,
        after=state.value,
        data=data,
    )
    return release.number


def _change(spec: ServiceSpec) -> dict[str, Any]:
    change: dict[str, Any] = {"image": spec.image, "replicas": spec.replicas}
    if spec.env:
        change["env"] = dict(spec.env)
    return {k: v for k, v in change.items() if v is not None}
