"""What callers read about releases: one release, pages, the timeline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import Session

from core.approvals.rows import (
    TicketRow,
    newest_ticket_rows,
    ticket_from,
    with_decisions,
    with_newest_ticket,
)
from core.approvals.tickets import (
    AnyRelease,
    AnyTicket,
    decidable_by,
    deciders_of,
    ticket_fields,
)
from core.audit.models import AuditEvent
from core.db import AnyRow, plain_rows, utcnow
from core.errors import InvalidInput
from core.flows.actions import allowed_actions
from core.ids import parse_release_id, release_id
from core.permissions import Action, Actor
from core.releases.lifecycle import (
    State,
    normalize_state,
)
from core.releases.models import ProgressEvent, Release
from core.releases.queries import missing_release, project_id_named, queued_ahead
from core.releases.rows import (
    RELEASE_WIDTH,
    PreviewRow,
    ReleaseRow,
    as_of_now,
    latest_preview_rows,
    page_select,
    release_from,
    release_select,
)
from core.releases.schemas import (
    ReleasePage,
    ReleaseRead,
    Timeline,
    TimelineEntry,
)
from core.releases.search import service_filter, text_filter, time_filters
from core.targets.frozen import frozen_as_read, frozen_now
from core.targets.schemas import FreezeInfo
from runtimes.base import (
    is_simulated,
)

if TYPE_CHECKING:
    from core.approvals.models import ApprovalTicket
    from core.releases.models import Preview


@dataclass(frozen=True)
class Loaded:
    """The newest preview and ticket of each release of a page; tickets the actor may decide."""

    # Rows for pages; entities when a writer (a submit) already holds them.
    previews: Mapping[int, PreviewRow | Preview] = field(default_factory=dict)
    tickets: Mapping[int, AnyTicket] = field(default_factory=dict)
    eligible: set[int] = field(default_factory=set)
    frozen: dict[int, FreezeInfo] = field(default_factory=dict)  # by target id
    deciders: dict[int, dict[int, str]] = field(default_factory=dict)


# A release as its views read it: its row, and its newest ticket (without its decisions).
Viewed = tuple[ReleaseRow, TicketRow | None]


@cache
def _viewed_by_number() -> Select[Any]:
    # `==`, not OneOf: see OneOf on PostgreSQL's plans for one value
    return with_newest_ticket(release_select(), Release.number).where(
        Release.number == bindparam("number")
    )


@lru_cache(maxsize=512)
def _viewed_page(filters: tuple[str, ...], limit: int) -> Select[Any]:
    # built once per filter set and size, as `page_select` is (a reused statement keeps its
    # cache key)
    return with_newest_ticket(page_select(filters, limit), Release.number)


def viewed_rows(
    session: Session, query: Select[Any], params: dict[str, Any] | None = None
) -> list[Viewed]:
    """The releases of a `_viewed_*` query: each with its project, target, freeze, requester,
    newest preview and newest ticket in one row (the ticket and the freezes were a statement
    each, about a third of reading one release)."""
    return viewed_from(plain_rows(session, query, {**(params or {}), **as_of_now()}))


def viewed_from(rows: Sequence[AnyRow | tuple[Any, ...]]) -> list[Viewed]:
    """The releases in the rows of a `_viewed_*` query."""
    found = []
    for row in rows:
        ticket = ticket_from(row, RELEASE_WIDTH) if row[RELEASE_WIDTH] is not None else None
        found.append((release_from(row), ticket))
    return found


def loaded_as_viewed(session: Session, viewed: Sequence[Viewed], actor: Actor) -> Loaded:
    """`load_for` of releases read by `viewed_rows`: the tickets' decisions and deciders in a
    statement each (none without a ticket), whatever their count."""
    tickets = with_decisions(session, [t for _, t in viewed if t is not None])
    deciders = deciders_of(session, tickets)
    return Loaded(
        previews={r.number: r.preview for r, _ in viewed if r.preview is not None},
        tickets={t.release_number: t for t in tickets},
        eligible=decidable_by(deciders, actor.user_id),
        frozen=frozen_as_read([r.target for r, _ in viewed], utcnow()),
        deciders=deciders,
    )


def load_for(session: Session, releases: Sequence[AnyRelease], actor: Actor) -> Loaded:
    """Previews, tickets (with decisions) and eligibility of these releases in a fixed number of
    queries, whatever their count: a page must not cost a query per row. Read as plain rows."""
    numbers = [r.number for r in releases]
    if not numbers:
        return Loaded()
    tickets = newest_ticket_rows(session, numbers)
    deciders = deciders_of(session, list(tickets.values()))
    eligible = decidable_by(deciders, actor.user_id)
    frozen = frozen_now(session, [r.target for r in releases])  # targets load with releases
    # rows come with their newest preview; entities (after a change) read theirs here
    previews = {r.number: r.preview for r in releases if isinstance(r, ReleaseRow) and r.preview}
    entities = [r.number for r in releases if not isinstance(r, ReleaseRow)]
    previews.update(latest_preview_rows(session, entities))
    return Loaded(previews, tickets, eligible, frozen, deciders)


def loaded_with(
    session: Session,
    release: Release,
    actor: Actor,
    preview: Preview | None,
    ticket: ApprovalTicket | None,
    frozen: dict[int, FreezeInfo] | None = None,
) -> Loaded:
    """`load_for` of one release whose newest preview and ticket the caller already holds
    (and its target's freeze, when the caller just checked it)."""
    deciders = deciders_of(session, [ticket] if ticket is not None else [])
    return Loaded(
        previews={release.number: preview} if preview is not None else {},
        tickets={release.number: ticket} if ticket is not None else {},
        eligible=decidable_by(deciders, actor.user_id),
        frozen=frozen if frozen is not None else frozen_now(session, [release.target]),
        deciders=deciders,
    )


def committed_view(
    session: Session,
    release: Release,
    actor: Actor,
    preview: Preview | None,
    ticket: ApprovalTicket | None,
    frozen: dict[int, FreezeInfo] | None = None,
) -> ReleaseRead:
    """Commit, answering with what the transaction wrote: read before the commit, from the
    objects the writer holds (after it, a second transaction would read them all again, and
    on SQLite take the write lock again)."""
    loaded = loaded_with(session, release, actor, preview, ticket, frozen)
    session.expire_on_commit = False  # they stay loaded through the commit
    try:
        session.commit()
    finally:
        session.expire_on_commit = True
    return view(session, release, actor, loaded)


def view(
    session: Session, release: AnyRelease, actor: Actor, loaded: Loaded | None = None
) -> ReleaseRead:
    """The public view of a release, with preview and approval (`loaded`: batch-loaded rows)."""
    return ReleaseRead.model_validate(view_fields(session, release, actor, loaded))


def view_fields(
    session: Session, release: AnyRelease, actor: Actor, loaded: Loaded | None = None
) -> dict[str, Any]:
    """`view` as plain fields: a page validates all its items in one pydantic call."""
    if loaded is None:
        loaded = load_for(session, [release], actor)
    preview = loaded.previews.get(release.number)
    ticket = loaded.tickets.get(release.number)
    frozen = loaded.frozen.get(release.target_id)
    approval = None
    if ticket is not None:
        approval = ticket_fields(
            session,
            ticket,
            release,
            actor,
            preview,
            ticket.id in loaded.eligible,
            loaded.deciders.get(ticket.id, {}),
        )
        approval["frozen"] = frozen
    state = normalize_state(release.lifecycle_state)
    queued = release.queued_at is not None and state == State.approved
    return {
        "id": release_id(release.number),
        "project": release.project.name,
        "environment": release.target.environment,
        "runtime": release.target.runtime,
        "simulated": is_simulated(release.target.runtime),
        "kind": release.kind,
        "changes": dict(release.changes),
        "lifecycle_state": state.value,
        "version": release.version,
        "requested_by": release.requested_by.name,
        "channel": release.channel,
        "emergency": release.emergency,
        "rollback_of": release_id(release.rollback_of) if release.rollback_of else None,
        "reason": release.reason,
        "preview": _preview_fields(preview, release) if preview else None,
        "approval": approval,
        "applied_spec": release.applied_spec,
        "queue_position": len(queued_ahead(session, release)) + 1 if queued else None,
        "retry_of": release_id(release.retry_of) if release.retry_of else None,
        "allowed_actions": allowed_actions(
            session,
            actor,
            release,
            ticket=ticket,
            decidable=approval["can_decide"] if approval is not None else False,
        ),
        "frozen": frozen,
        "created_at": release.created_at,
        "updated_at": release.updated_at,
    }


def _preview_fields(preview: PreviewRow | Preview, release: AnyRelease) -> dict[str, Any]:
    # diff and desired validate into FieldChange / ServiceSpec with the rest of the view
    return {
        "diff": preview.diff,
        "desired": preview.desired,
        "diff_hash": preview.diff_hash,
        "base_fingerprint": preview.base_fingerprint,
        "risk": {
            "level": preview.risk_level,
            "reasons": list(preview.risk_reasons),
            "tier": release.target.risk_tier,
        },
        "created_at": preview.created_at,
        "expires_at": preview.expires_at,
        "expired": preview.expires_at <= utcnow(),
    }


def release_read(release: str) -> tuple[Select[Any], dict[str, Any]]:
    """The statement `get_release` reads first, and its parameters: it does not depend on
    who asks, so a door may run it with the caller's token check (`authenticate_with`)."""
    return _viewed_by_number(), {"number": parse_release_id(release), **as_of_now()}


def get_release(
    session: Session,
    *,
    actor: Actor,
    release: str,
    read: Sequence[tuple[Any, ...]] | None = None,
) -> ReleaseRead:
    """One release the actor can view; one they cannot is answered as a missing one (no
    door may tell a hidden release from a nonexistent one). `read`: the rows of
    `release_read(release)`, when the caller ran it already."""
    statement, params = release_read(release)  # the same read, whoever ran it
    number = params["number"]
    viewed = viewed_from(plain_rows(session, statement, params) if read is None else read)
    if any(row.number != number for row, _ in viewed):
        raise ValueError(f"rows of another release than {release_id(number)}")
    if not viewed or not actor.can(Action.view, viewed[0][0].project_id):
        raise missing_release(number)
    return view(session, viewed[0][0], actor, loaded_as_viewed(session, viewed, actor))


def list_releases(
    session: Session,
    *,
    actor: Actor,
    project: str | None = None,
    environment: str | None = None,
    state: str | None = None,
    requested_by: str | None = None,
    service: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    text: str | None = None,
    limit: int = 50,
    before: str | None = None,
) -> ReleasePage:
    """Releases the actor can view, newest first, filtered and paginated by cursor.

    `requested_by` is a user name, or `me` for the actor; an unknown name matches nothing.
    `since`/`until` bound the creation time; `text` searches the id, the change (version,
    image), the reason and the requester's name.
    """
    time_filters(since, until)  # refuses naive times
    searched = [service_filter(service)] if service is not None else []
    if text is not None and (matched := text_filter(text)) is not None:
        searched.append(matched)
    params: dict[str, Any] = {"since": since, "until": until}
    if requested_by is not None:
        params["requester"] = actor.name if requested_by.lower() == "me" else requested_by
    if project is not None:
        params["project"] = project_id_named(session, project)
    if environment is not None:
        params["environment"] = environment.lower()
    if state is not None:
        try:
            params["state"] = normalize_state(state.lower()).value
        except KeyError:
            raise InvalidInput(
                f"{state!r} is not a lifecycle state", known=[s.value for s in State]
            ) from None
    if before is not None:
        params["before"] = parse_release_id(before)
    params["visible"] = actor.visible_projects()
    params = {k: v for k, v in params.items() if v is not None}
    query = _viewed_page(tuple(sorted(params)), limit + 1)
    if searched:
        query = query.where(*searched)
    viewed = viewed_rows(session, query, params)
    more = len(viewed) > limit
    viewed = viewed[:limit]
    loaded = loaded_as_viewed(session, viewed, actor)
    return ReleasePage.model_validate(
        {
            "items": [view_fields(session, r, actor, loaded) for r, _ in viewed],
            "next_before": release_id(viewed[-1][0].number) if more and viewed else None,
        }
    )


def timeline(session: Session, *, actor: Actor, release: str) -> Timeline:
    """Audit events and runtime progress of one release, in order (a release the actor cannot
    view is answered as a missing one)."""
    number = parse_release_id(release)
    found = session.get(Release, number)
    if found is None or not actor.can(Action.view, found.project_id):
        raise missing_release(number)
    entries = [
        TimelineEntry(
            at=e.at,
            kind="audit",
            action=e.action,
            actor=e.actor,
            on_behalf_of=e.on_behalf_of,
            channel=e.channel,
            before_state=e.before_state,
            after_state=e.after_state,
            data=e.data,
        )
        for e in session.scalars(
            select(AuditEvent)
            .where(AuditEvent.release_number == found.number)
            .order_by(AuditEvent.seq)
        )
    ]
    entries += [
        TimelineEntry(at=p.at, kind="progress", service=p.service, level=p.level, message=p.message)
        for p in session.scalars(
            select(ProgressEvent)
            .where(ProgressEvent.release_number == found.number)
            .order_by(ProgressEvent.id)
        )
    ]
    entries.sort(key=lambda entry: entry.at)  # stable: audit order kept among equal times
    return Timeline(
        release_id=release_id(found.number),
        lifecycle_state=normalize_state(found.lifecycle_state).value,
        entries=entries,
    )
