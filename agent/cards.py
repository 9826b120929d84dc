"""Cards: confirmation cards (the requester confirms a mutating call) and approval cards.

A card is a row, so it survives reconnects and is the same card in every session of its
owner. Deciding one runs the registry tool as the card's owner: core's rules decide.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import Executable, Select, Table, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from agent.models import ChatCard
from core.approvals.tickets import current_ticket, eligible_approvers, ticket_deadline
from core.db import OneOf, among, among_values, plain_rows, utcnow
from core.identity.models import User
from core.ids import parse_release_id, release_id
from core.releases.models import Preview, Release
from core.releases.queries import current_preview
from core.targets.frozen import frozen_now
from core.targets.models import Project, Target
from runtimes.base import is_simulated
from tools.desk import CONFIRM_TITLES

# What confirming a card runs, and what its other actions do.
# Retry and promote only preview a new release, like a deploy: they run, then submit is the card.
PREVIEW_TOOLS = ("preview_release", "rollback_release", "retry_release", "promote_release")
ACTIONS = {
    "confirmation": ["confirm", "cancel"],
    "approval": ["approve", "reject"],
}
# The lifecycle state in which each card's tool still makes sense.
LIVE_WHILE = {
    "submit_release": "previewed",
    "apply_release": "approved",
    "approve_release": "pending_approval",
    "reject_release": "pending_approval",
    "approval": "pending_approval",
}


def new_id() -> str:
    """A short random card or session id."""
    return uuid.uuid4().hex[:16]


def _expires(session: Session, release: Release | None) -> Any:
    if release is None:
        return None
    preview = current_preview(session, release.number)
    return preview.expires_at if preview else None


def confirmation_card(
    session: Session,
    *,
    user_id: int,
    session_id: str | None,
    tool: str,
    args: dict[str, Any],
) -> ChatCard:
    """A card that runs `tool(args)` when its owner confirms it."""
    number = None
    raw_id = args.get("release_id")
    if isinstance(raw_id, str):
        try:
            number = parse_release_id(raw_id)
        except Exception:  # a bad id is refused by core when the card is confirmed
            number = None
    release = session.get(Release, number) if number else None
    if release is not None:
        same = session.scalars(
            select(ChatCard).where(
                ChatCard.release_number == number,
                ChatCard.user_id == user_id,
                ChatCard.kind == "confirmation",
                ChatCard.tool == tool,
                ChatCard.state == "open",
            )
        ).first()
        if same is not None:  # asking twice shows the same card again
            same.args = args
            return same
    card = ChatCard(
        id=new_id(),
        user_id=user_id,
        session_id=session_id,
        kind="confirmation",
        tool=tool,
        args=args,
        release_number=number if release else None,
        expires_at=_expires(session, release),
    )
    session.add(card)
    session.flush()
    return card


def approval_cards(session: Session, release: Release) -> set[int]:
    """Open an approval card for every eligible approver of the release's ticket (idempotent);
    returns who they are."""
    number = release.number
    # Its decisions are not read: who may decide is one query (`eligible_approvers`).
    ticket = current_ticket(session, number, decisions=False)
    if ticket is None:
        return set()
    # An approval waits for people until its ticket times out, not for the preview TTL: core
    # re-previews a stale preview when the approver decides.
    expires = ticket_deadline(ticket, release.target)
    approvers = eligible_approvers(session, ticket)
    card = {
        "kind": "approval",
        "tool": "approve_release",
        "args": {"release_id": release_id(number)},
        "release_number": number,
        "state": "open",
        "created_at": utcnow(),
        "expires_at": expires,
    }
    # One statement for every approver; whoever already holds an open card keeps it (the
    # open-card unique index, not a read first).
    if session.get_bind().dialect.name == "postgresql" and approvers:
        ids = [new_id() for _ in approvers]
        session.execute(_approval_cards_pg(), {**card, "ids": ids, "users": list(approvers)})
    else:
        rows = [{"id": new_id(), "user_id": user_id, **card} for user_id in approvers]
        insert_ignoring_open_duplicates(session, rows)
    return set(approvers)


@cache
def _approval_cards_pg() -> Executable:
    # A hundred approvers were a hundred pipelined INSERTs (psycopg binds each row: ~40% of a
    # fan-out's card writes); here the rows differ only by id and owner: two array parameters.
    table = ChatCard.__table__
    assert isinstance(table, Table)
    owners = (
        func.unnest(
            bindparam("ids", type_=ARRAY(table.c.id.type)),
            bindparam("users", type_=ARRAY(table.c.user_id.type)),
        )
        .table_valued("id", "user_id")
        .render_derived(name="owners")
    )
    same = ["kind", "tool", "args", "release_number", "state", "created_at", "expires_at"]
    rows = select(
        owners.c.id, owners.c.user_id, *(bindparam(name, type_=table.c[name].type) for name in same)
    )
    return (
        postgresql.insert(table)  # Core: the ORM's bulk insert takes no SELECT
        .from_select(["id", "user_id", *same], rows)
        .on_conflict_do_nothing()
    )


class OpenCard(NamedTuple):
    """A card as a fan-out pushes it: the columns its view reads, not an ORM object (loading a
    hundred of those took 3.4 ms of a pass's CPU on PostgreSQL; these, 1.3)."""

    id: str
    user_id: int
    kind: str
    tool: str
    args: dict[str, Any]
    state: str
    outcome: str | None
    expires_at: datetime | None
    release_number: int | None


@cache
def _open_cards(of_users: bool) -> Select[Any]:
    query = select(*(getattr(ChatCard, name) for name in OpenCard._fields)).where(
        ChatCard.release_number == bindparam("number"),
        ChatCard.kind == bindparam("kind"),
        ChatCard.state == "open",
    )
    # a fan-out asks for a hundred users: one array parameter, not a hundred (core.db.OneOf)
    return query.where(OneOf(ChatCard.user_id, "users")) if of_users else query


def open_cards(
    session: Session, number: int, *, kind: str, users: Iterable[int] | None = None
) -> list[OpenCard]:
    """The open cards of a kind for a release, whoever created them (or only `users`')."""
    params: dict[str, Any] = {"number": number, "kind": kind}
    if users is not None:
        params["users"] = sorted(users)
    rows = plain_rows(session, _open_cards(users is not None), params)
    return [OpenCard._make(row) for row in rows]


def insert_ignoring_open_duplicates(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert cards; one another replica already opened for the same purpose is kept."""
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        session.execute(postgresql.insert(ChatCard).on_conflict_do_nothing(), rows)
    else:
        session.execute(sqlite.insert(ChatCard).on_conflict_do_nothing(), rows)


def apply_card(session: Session, release: Release) -> int:
    """Open the requester's apply card for an approved release (once); returns the requester."""
    rows = [
        {
            "id": new_id(),
            "user_id": release.requested_by_id,
            "kind": "confirmation",
            "tool": "apply_release",
            "args": {"release_id": release_id(release.number)},
            "release_number": release.number,
            "state": "open",
            "created_at": utcnow(),
            "expires_at": _expires(session, release),
        }
    ]
    insert_ignoring_open_duplicates(session, rows)
    return release.requested_by_id


def settle(session: Session, release: Release, cards: Iterable[ChatCard]) -> list[ChatCard]:
    """Close those of the release's open `cards` that its new state makes pointless; return
    them.

    A fixed number of statements however many cards close: the eligible approvers are read
    once, and the closed cards are written by one UPDATE.
    """
    number = release.number
    # The ticket's deciders are read once, and only if an approval card may still be live.
    looked, eligible = False, None
    changed = []
    for card in cards:
        if card.state != "open":
            continue
        needed = LIVE_WHILE.get("approval" if card.kind == "approval" else card.tool)
        still = needed is None or release.lifecycle_state == needed
        if card.kind == "approval" and still:
            if not looked:
                looked, ticket = True, current_ticket(session, number)
                eligible = set(eligible_approvers(session, ticket)) if ticket else None
            still = eligible is None or card.user_id in eligible
        if not still:
            changed.append(card)
    if changed:
        outcome = f"{release_id(number)} is now {release.lifecycle_state}"
        now = utcnow()
        session.execute(
            update(ChatCard)
            .where(OneOf(ChatCard.id, "cards"), ChatCard.state == "open")
            .values(state="void", decided_at=now, outcome=outcome)
            .execution_options(synchronize_session=False),
            {"cards": [c.id for c in changed]},
        )
        for card in changed:  # the rows are written; keep the loaded objects in step
            set_committed_value(card, "state", "void")
            set_committed_value(card, "decided_at", now)
            set_committed_value(card, "outcome", outcome)
    return changed


def card_view(
    session: Session, card: ChatCard | OpenCard, release_part: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The card as clients render it: release, target, per-service diff, risk, expiry.

    `release_part` (from `release_view`) saves reading the same release for many cards.
    """
    view: dict[str, Any] = {
        "id": card.id,
        "kind": card.kind,
        "tool": card.tool,
        "args": card.args,
        "state": card.state,
        "outcome": card.outcome,
        "actions": ACTIONS[card.kind] if card.state == "open" else [],
        "release_id": None,
        "project": None,
        "environment": None,
        "lifecycle_state": None,
        "diff": {},
        "risk": None,
        "expires_at": card.expires_at.isoformat() if card.expires_at else None,
    }
    if card.release_number is not None:
        if release_part is None:
            release_part = release_view(session, card.release_number)
        view.update(release_part)
    view["title"] = _title(card, view)
    return view


@cache
def _release_parts(one: bool) -> Select[Any]:
    # Built once, as the hub runs it at every fan-out (a reused statement keeps its cache key);
    # `one`: the variant for one release, which PostgreSQL plans once (core.db.among)
    newest = (
        select(func.max(Preview.id))
        .where(Preview.release_number == Release.number)
        .correlate(Release)
        .scalar_subquery()
    )
    return (
        select(
            Release.number,
            Release.lifecycle_state,
            Project.name,
            Target.environment,
            Target.runtime,
            Target.risk_tier,
            User.name.label("requester"),
            Preview.diff,
            Preview.risk_level,
            Preview.risk_reasons,
            Preview.id.label("preview_id"),
            Target.id,
            Target.project_id,
            Target.windows,
        )
        .join(Project, Project.id == Release.project_id)
        .join(Target, Target.id == Release.target_id)
        .join(User, User.id == Release.requested_by_id)
        .outerjoin(Preview, Preview.id == newest)
        .where(among(Release.number, "numbers", one))
    )


def release_view(session: Session, number: int) -> dict[str, Any]:
    """The release fields of a card: id, target, state, requester, diff, risk."""
    return release_views(session, [number]).get(number, {})


def release_views(session: Session, numbers: Iterable[int]) -> dict[int, dict[str, Any]]:
    """`release_view` of many releases in one column-only statement (no ORM objects: the hub
    builds these for every fan-out)."""
    wanted = sorted(set(numbers))
    if not wanted:
        return {}
    one, values = among_values(wanted)
    rows = plain_rows(session, _release_parts(one), {"numbers": values})
    # a row carries its target's id, project, environment and windows: what freezes look at
    frozen = frozen_now(session, rows)
    views: dict[int, dict[str, Any]] = {}
    for (
        number,
        state,
        project,
        env,
        runtime,
        tier,
        requester,
        diff,
        level,
        reasons,
        pid,
        tid,
        *_,
    ) in rows:
        held = frozen.get(tid)
        part: dict[str, Any] = {
            "release_id": release_id(number),
            "project": project,
            "environment": env,
            "lifecycle_state": state,
            "requested_by": requester,
            "simulated": is_simulated(runtime),
            "frozen": held.model_dump(mode="json") if held is not None else None,
        }
        if pid is not None:
            part["diff"] = diff
            part["risk"] = {"level": level, "reasons": reasons, "tier": tier}
        views[number] = part
    return views


def card_views(session: Session, cards: Iterable[ChatCard]) -> list[dict[str, Any]]:
    """`card_view` of many cards, reading each release once (a fixed number of statements)."""
    cards = list(cards)
    parts = release_views(session, (c.release_number for c in cards if c.release_number))
    return [
        card_view(
            session,
            card,
            parts.get(card.release_number, {}) if card.release_number is not None else None,
        )
        for card in cards
    ]


def _title(card: ChatCard | OpenCard, view: dict[str, Any]) -> str:
    rid, where = view.get("release_id"), f"{view.get('project')}/{view.get('environment')}"
    if card.tool in PREVIEW_TOOLS and rid is None:  # a proposed preview, not yet run
        args = card.args
        what = ", ".join(
            f"{service} {' '.join(f'{k}={v}' for k, v in change.items())}"
            for service, change in (args.get("changes") or {}).items()
            if isinstance(change, dict)
        )
        verb = "Preview" if card.tool == "preview_release" else "Preview a rollback of"
        return f"{verb} {args.get('project')}/{args.get('environment')} {what}".rstrip() + "?"
    if card.kind == "approval":
        return f"Approve {rid} on {where}, requested by {view.get('requested_by')}?"
    if card.tool in DESK_TITLES:
        return DESK_TITLES[card.tool](card.args)
    return {
        "submit_release": f"Submit {rid} for {where}?",
        "apply_release": f"Apply {rid} to {where} now?",
        "approve_release": f"Approve {rid}?",
        "reject_release": f"Reject {rid}?",
        "cancel_release": f"Cancel {rid}?",
    }.get(card.tool, f"Run {card.tool} {card.args}?")


def _promote_title(args: dict[str, Any]) -> str:
    services = ", ".join(args.get("services") or []) or "every service"
    source = args.get("from_environment") or "the previous environment"
    return (
        f"Promote {args.get('project')} {services} from {source} to {args.get('to_environment')}?"
    )


def _retry_title(args: dict[str, Any]) -> str:
    return f"Retry {args.get('release_id')} as a new release?"


DESK_TITLES = {
    **CONFIRM_TITLES,
    "promote_release": _promote_title,
    "retry_release": _retry_title,
}
