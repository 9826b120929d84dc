"""API tokens (issue, list, revoke, expire) and single-use tickets; secrets stored hashed."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache, lru_cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Select,
    bindparam,
    delete,
    exists,
    null,
    select,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy.orm import Session

from core.audit.service import record
from core.db import AnyRow, OneOf, plain_rows, utcnow
from core.errors import InvalidInput, NotFound
from core.identity.models import ApiToken, AuthTicket, Grant, User
from core.identity.schemas import TokenRead
from core.permissions import Action, Actor, Role, require
from core.targets.models import Project

TOKEN_PREFIX = "sd_"
DURATION = re.compile(r"^(\d{1,6})([smhdw])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def hash_token(token: str) -> str:
    """The stored form of a token or ticket (SHA-256: the secrets carry 256 random bits)."""
    return hashlib.sha256(token.encode()).hexdigest()


def parse_expiry(text: str, now: datetime | None = None) -> datetime:
    """`30d`, `12h`, `90m`, `2w` or an ISO date/time (UTC if no zone) as an aware datetime."""
    now = now or utcnow()
    text = text.strip()
    match = DURATION.match(text)
    if match:
        seconds = int(match.group(1)) * UNITS[match.group(2)]
        if seconds <= 0:
            raise InvalidInput("an expiry must be in the future", expires=text)
        return now + timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"{text[:40]!r} is not a duration (30d, 12h, 90m) or an ISO date", expires=text[:40]
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=now.tzinfo)
    if moment <= now:
        raise InvalidInput("an expiry must be in the future", expires=text)
    return moment


def issue_token(
    session: Session, user: User, label: str = "", *, expires_at: datetime | None = None
) -> str:
    """Mint a token for the user (unaudited primitive; `create_token` is the audited door)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(
        ApiToken(
            user_id=user.id,
            token_hash=hash_token(token),
            label=label,
            hint=token[:8],
            expires_at=expires_at,
        )
    )
    session.flush()
    return token


def _read(token: ApiToken, user: str, now: datetime) -> TokenRead:
    expired = token.expires_at is not None and token.expires_at <= now
    return TokenRead(
        id=token.id,
        user=user,
        label=token.label,
        hint=token.hint,
        created_at=token.created_at,
        expires_at=token.expires_at,
        revoked_at=token.revoked_at,
        active=token.revoked_at is None and not expired,
    )


def _audit_issue(session: Session, actor: Actor, user: User, token: str, label: str) -> None:
    row = session.scalars(select(ApiToken).where(ApiToken.token_hash == hash_token(token))).one()
    record(
        session,
        actor=actor,
        action="token_issued",
        data={
            "user": user.name,
            "token_id": row.id,
            "label": label,
            "hint": row.hint,
            "expires_at": row.expires_at.isoformat() if row.expires_at else None,
        },
    )


def grant_token(
    session: Session,
    *,
    actor: Actor,
    user: User,
    label: str = "",
    expires_at: datetime | None = None,
) -> str:
    """Issue a token and audit it, in the caller's transaction (no permission check)."""
    token = issue_token(session, user, label, expires_at=expires_at)
    _audit_issue(session, actor, user, token, label)
    return token


def create_token(
    session: Session,
    *,
    actor: Actor,
    user: str,
    label: str = "",
    expires_at: datetime | None = None,
) -> tuple[str, TokenRead]:
    """Admin: issue a token for an existing user; audited. Commits. Returns (secret, view)."""
    require(actor, Action.admin, None)
    found = session.scalars(select(User).where(User.name == user)).first()
    if found is None:
        raise NotFound(f"no user named {user[:64]!r}", user=user[:64])
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidInput("an expiry must be in the future")
    token = grant_token(session, actor=actor, user=found, label=label, expires_at=expires_at)
    row = session.scalars(select(ApiToken).where(ApiToken.token_hash == hash_token(token))).one()
    view = _read(row, found.name, utcnow())
    session.commit()
    return token, view


def list_tokens(
    session: Session, *, actor: Actor, user: str | None = None, include_inactive: bool = False
) -> list[TokenRead]:
    """Tokens, newest first: an admin sees everyone's, anyone else only their own."""
    query = select(ApiToken, User.name).join(User, User.id == ApiToken.user_id)
    if not actor.is_admin:
        query = query.where(ApiToken.user_id == (actor.user_id or -1))
    if user is not None:
        query = query.where(User.name == user)
    now = utcnow()
    views = [
        _read(token, name, now)
        for token, name in session.execute(query.order_by(ApiToken.id.desc()))
    ]
    return views if include_inactive else [v for v in views if v.active]


def revoke_token(session: Session, *, actor: Actor, token_id: int) -> TokenRead:
    """Revoke one token (an admin: anyone's; others: their own); audited. Commits."""
    token = session.get(ApiToken, token_id)
    if token is None or (not actor.is_admin and token.user_id != actor.user_id):
        raise NotFound(f"no token {token_id}", token_id=token_id)
    user = session.get_one(User, token.user_id)
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        record(
            session,
            actor=actor,
            action="token_revoked",
            data={
                "user": user.name,
                "token_id": token.id,
                "label": token.label,
                "hint": token.hint,
            },
        )
    view = _read(token, user.name, utcnow())
    session.commit()
    return view


def revoke_labelled(session: Session, *, actor: Actor, user: User, label: str) -> int:
    """Revoke a user's active tokens carrying a label, each audited; how many were revoked."""
    revoked = 0
    for token in session.scalars(
        select(ApiToken).where(
            ApiToken.user_id == user.id, ApiToken.label == label, ApiToken.revoked_at.is_(None)
        )
    ):
        token.revoked_at = utcnow()
        record(
            session,
            actor=actor,
            action="token_revoked",
            data={"user": user.name, "token_id": token.id, "label": label, "hint": token.hint},
        )
        revoked += 1
    return revoked


# ---------------------------------------------------------------- authentication


@dataclass(frozen=True)
class Credential:
    """Who a token authenticates, and which token: sockets re-check it by id."""

    actor: Actor
    token_id: int


# one row per grant (an owner of 200 projects: 200 rows): a dict lookup each, not Role()
_ROLES = {role.value: role for role in Role}


def _credential_rows(condition: ColumnElement[bool]) -> Select[Any]:
    """Token, user and grants joined, one row per grant, for the token `condition` picks."""
    return (
        select(*_CREDENTIAL_COLUMNS)
        .join(User, User.id == ApiToken.user_id)
        .outerjoin(Grant, Grant.user_id == User.id)
        .outerjoin(Project, Project.id == Grant.project_id)
        .where(condition)
    )


@cache
def _by_hash() -> Select[Any]:
    # built once: every request runs it, and a reused statement keeps its cache key
    return _credential_rows(ApiToken.token_hash == bindparam("hash"))


_CREDENTIAL_COLUMNS: tuple[Any, ...] = (
    ApiToken.id,
    ApiToken.revoked_at,
    ApiToken.expires_at,
    User.id,
    User.name,
    Grant.project_id,
    Grant.role,
    Project.name,
)


def authenticate_token(session: Session, token: str) -> Credential | None:
    """The credential a bearer token stands for, or None (unknown, revoked or expired).

    One statement per request (token, user and grants joined), read fresh every time: a
    revocation, an expiry or a changed role applies to the very next request.
    """
    if not _plausible(token):
        return None
    return credential_from(plain_rows(session, _by_hash(), {"hash": hash_token(token)}))


def authenticate_with(
    session: Session, token: str, also: Select[Any], params: dict[str, Any]
) -> tuple[Credential | None, list[tuple[Any, ...]]]:
    """`authenticate_token`, and the rows of `also`, in one round trip; the rows only if the
    token is active.

    For a read whose statement does not depend on who asks (one release by its number): a
    statement costs a server about as much as the rest of such a read (README, "One round
    trip for the token and the release"). `also` is built once (its union is kept per
    statement object); it may be a SELECT of joins and a WHERE, nothing more, and take no
    parameter named `hash`.
    """
    if not _plausible(token):
        return None, []
    rows = plain_rows(session, _with(also), {**params, "hash": hash_token(token)})
    # the token's rows have its id; `also`'s have NULL in the token's columns
    credential = credential_from([row for row in rows if row[0] is not None])
    if credential is None:
        return None, []
    width = len(_CREDENTIAL_COLUMNS)
    return credential, [tuple(row)[width:] for row in rows if row[0] is None]


def _plausible(token: str) -> bool:
    # the shape of a token shipdeck issues: anything else is refused without a statement
    return token.startswith(TOKEN_PREFIX) and len(token) <= 256


@lru_cache(maxsize=16)
def _with(also: Select[Any]) -> CompoundSelect[Any]:
    # One row shape for both: each side's columns NULL in the other's rows. A bare NULL takes
    # its type from the other side (PostgreSQL's UNION resolution) and its value processing
    # from the first side's declared type.
    if "hash" in also.compile().params:
        raise ValueError("`also` takes a parameter named `hash`, the token's")
    froms = also.get_final_froms()
    kept = select(*also.selected_columns).select_from(*froms).where(*_where(also))
    if str(kept.compile()) != str(also.compile()):  # DISTINCT, LIMIT, a CTE... would be lost
        raise ValueError("`also` must be a SELECT of joins and a WHERE: nothing else is kept")
    # An unknown or revoked token's request reads no release: the database skips that side
    # (one index lookup), and a refusal costs what it did before.
    known = exists().where(ApiToken.token_hash == bindparam("hash"), ApiToken.revoked_at.is_(None))
    theirs = [type_coerce(null(), column.type) for column in also.selected_columns]
    mine = [type_coerce(null(), column.type) for column in _by_hash().selected_columns]
    read = select(*mine, *also.selected_columns).select_from(*froms)
    return union_all(_by_hash().add_columns(*theirs), read.where(*_where(also), known))


def _where(statement: Select[Any]) -> list[ColumnElement[bool]]:
    return [] if statement.whereclause is None else [statement.whereclause]


@cache
def _by_id() -> Select[Any]:
    return _credential_rows(ApiToken.id == bindparam("token_id"))


def credential_for(session: Session, token_id: int) -> Credential | None:
    """The credential of a token id as of now: None once revoked or expired.

    Open sockets call this per action, so a revocation or a lowered role applies at once. One
    statement (token, user and grants joined; it was three), read fresh every time.
    """
    return credential_from(plain_rows(session, _by_id(), {"token_id": token_id}))


def credential_with(*also: ColumnElement[Any]) -> Select[Any]:
    """`credential_for`'s statement (parameter `token_id`) with more columns after its own,
    read in the same round trip; `credential_from` reads its rows. Build it once."""
    return _by_id().add_columns(*also)


def credential_from(rows: Sequence[AnyRow]) -> Credential | None:
    """The credential rows of the statements above stand for, if it is active."""
    if not rows:
        return None
    token_id, revoked_at, expires_at, user_id, name = tuple(rows[0])[:5]
    if revoked_at is not None or (expires_at is not None and expires_at <= utcnow()):
        return None
    grants = {row[5]: _ROLES[row[6]] for row in rows if row[6] is not None}
    projects = {row[7]: row[5] for row in rows if row[7] is not None}
    return Credential(Actor(user_id, name, grants, projects=projects), token_id)


def credentials_for(session: Session, token_ids: set[int]) -> dict[int, Credential]:
    """The active credentials among these token ids, in two queries (idle-socket re-checks)."""
    if not token_ids:
        return {}
    now = utcnow()
    # Every open socket's token: hundreds of ids, bound as one array on PostgreSQL (OneOf).
    rows = session.execute(
        select(ApiToken.id, ApiToken.revoked_at, ApiToken.expires_at, User.id, User.name)
        .join(User, User.id == ApiToken.user_id)
        .where(OneOf(ApiToken.id, "tokens")),
        {"tokens": sorted(token_ids)},
    ).all()
    live = [
        (token_id, user_id, name)
        for token_id, revoked_at, expires_at, user_id, name in rows
        if revoked_at is None and (expires_at is None or expires_at > now)
    ]
    grants = grants_of(session, {user_id for _, user_id, _ in live})
    return {
        token_id: Credential(Actor(user_id, name, grants.get(user_id, {})), token_id)
        for token_id, user_id, name in live
    }


def grants_of(session: Session, user_ids: Iterable[int]) -> dict[int, dict[int | None, Role]]:
    """Each of these users' roles by project (None: every project), in one statement."""
    grants: dict[int, dict[int | None, Role]] = {}
    for user_id, project_id, role in session.execute(
        select(Grant.user_id, Grant.project_id, Grant.role).where(OneOf(Grant.user_id, "users")),
        {"users": sorted(set(user_ids))},
    ):
        grants.setdefault(user_id, {})[project_id] = Role(role)
    return grants


# ---------------------------------------------------------------- tickets


def issue_ticket(
    session: Session,
    *,
    purpose: str,
    ttl_seconds: int,
    token_id: int | None = None,
    data: dict[str, Any] | None = None,
    secret: str | None = None,
) -> tuple[str, datetime]:
    """Store a single-use ticket (hashed); returns the secret and its expiry. Commits."""
    now = utcnow()
    # Old tickets are useless: sweep them while we hold the write lock anyway.
    session.execute(delete(AuthTicket).where(AuthTicket.expires_at < now - timedelta(hours=1)))
    secret = secret or secrets.token_urlsafe(32)
    expires_at = now + timedelta(seconds=ttl_seconds)
    session.add(
        AuthTicket(
            id=hash_token(secret),
            purpose=purpose,
            token_id=token_id,
            data=data or {},
            created_at=now,
            expires_at=expires_at,
        )
    )
    session.commit()
    return secret, expires_at


def consume_ticket(session: Session, secret: str, purpose: str) -> AuthTicket | None:
    """Use a ticket once: the first caller within its lifetime gets it, everyone else None."""
    if not secret or len(secret) > 256:
        return None
    key = hash_token(secret)
    now = utcnow()
    claimed = session.execute(
        update(AuthTicket)
        .where(
            AuthTicket.id == key,
            AuthTicket.purpose == purpose,
            AuthTicket.used_at.is_(None),
            AuthTicket.expires_at > now,
        )
        .values(used_at=now)
    )
    session.commit()
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return session.get(AuthTicket, key)
