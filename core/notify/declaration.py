"""The `notifications:` and `identities:` sections of the declaration file, and loading them."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from core.audit.models import AuditEvent, SinkState
from core.audit.service import record
from core.errors import InvalidInput
from core.notify.models import NotifyIdentity, NotifyRoute
from core.permissions import Action, Actor, require
from core.targets.parts import load_part

EVENTS = (
    "approval_needed",
    "approved",
    "rejected",
    "applied",
    "failed",
    "expired",
    "ticket_timed_out",
    "cancelled",
    "rolled_back",
    "rollback_failed",
)
CURSOR = "notify"
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class RouteDecl(BaseModel):
    """One route: where to send, and which events of which projects and environments."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Unique route name, e.g. `shop-prod-slack`.")
    kind: Literal["webhook", "slack", "feishu"]
    url: str = Field(
        description="Webhook URL, Slack incoming-webhook URL or Feishu custom-bot webhook URL."
    )
    secret: str | None = Field(default=None, description="Signing secret (prefer secret_env).")
    secret_env: str | None = Field(
        default=None, description="Environment variable holding the signing secret."
    )
    projects: list[str] = Field(default_factory=list, description="Empty: every project.")
    environments: list[str] = Field(default_factory=list, description="Empty: every one.")
    events: list[str] = Field(default_factory=list, description="Empty: every event.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError("a route name is lowercase letters, digits, '.', '_' or '-'")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or len(value) > 2000:
            raise ValueError("a route URL is http(s) and at most 2000 characters")
        return value

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(EVENTS))
        if unknown:
            raise ValueError(f"unknown events {unknown}; known: {', '.join(EVENTS)}")
        return value

    @field_validator("projects", "environments")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [v.lower() for v in value]


class NotifyDeclaration(BaseModel):
    """What the declaration file says about notifications and chat identities."""

    model_config = ConfigDict(extra="forbid")

    notifications: list[RouteDecl] = Field(default_factory=list)
    identities: dict[Literal["slack", "feishu"], dict[str, str]] = Field(default_factory=dict)


def split_declaration(text: str) -> tuple[str, NotifyDeclaration | None]:
    """Take the notification sections out of declaration YAML; the rest is returned as YAML."""
    import yaml

    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise InvalidInput(f"the declaration is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict) or not ({"notifications", "identities"} & set(raw)):
        return text, None
    mine = {k: raw.pop(k) for k in ("notifications", "identities") if k in raw}
    try:
        parsed = NotifyDeclaration.model_validate(mine)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise InvalidInput("the declaration is invalid: " + "; ".join(problems)) from exc
    names = [r.name for r in parsed.notifications]
    if len(set(names)) != len(names):
        raise InvalidInput("two notification routes share a name")
    return yaml.safe_dump(raw), parsed


def _route_values(route: RouteDecl) -> dict[str, Any]:
    return route.model_dump(exclude={"name"})


def load_notifications(
    session: Session, *, actor: Actor, declaration: NotifyDeclaration
) -> list[str]:
    """Replace routes and identity links with the declared ones (audited). Commits.

    One part of a load: serialised with the other loads' parts and run again from its read
    if it loses a race for the same rows (core/targets/parts.py)."""
    require(actor, Action.admin, None)
    return load_part(
        session,
        what="loading the notification routes",
        work=lambda: _declare(session, actor, declaration),
    )


def _declare(session: Session, actor: Actor, declaration: NotifyDeclaration) -> list[str]:
    changed: list[str] = []
    have = {r.name: r for r in session.scalars(select(NotifyRoute))}
    wanted = {r.name: r for r in declaration.notifications}
    for name, route in wanted.items():
        values = _route_values(route)
        existing = have.get(name)
        if existing is None:
            session.add(NotifyRoute(name=name, **values))
            changed.append(f"notification route {name} ({route.kind})")
        elif any(getattr(existing, k) != v for k, v in values.items()):
            for key, value in values.items():
                setattr(existing, key, value)
            changed.append(f"notification route {name} ({route.kind})")
    for name in set(have) - set(wanted):
        session.delete(have[name])
        changed.append(f"notification route {name} removed")
    links = {
        (platform, external): user
        for platform, mapping in declaration.identities.items()
        for external, user in mapping.items()
    }
    current = {
        (i.platform, i.external_id): i.user_name for i in session.scalars(select(NotifyIdentity))
    }
    if links != current:
        session.execute(delete(NotifyIdentity))
        for (platform, external), user in sorted(links.items()):
            session.add(NotifyIdentity(platform=platform, external_id=external, user_name=user))
        changed.append(f"identity links: {len(current)} -> {len(links)}")
    if session.get(SinkState, CURSOR) is None:
        # Notifications start when routes are first declared: history is not replayed.
        last = session.scalar(select(func.coalesce(func.max(AuditEvent.seq), 0)))
        session.add(SinkState(name=CURSOR, delivered_seq=int(last or 0), failures=0))
    if changed:
        record(
            session,
            actor=actor,
            action="notifications_declared",
            data={"changed": changed, "routes": sorted(wanted)},
        )
    session.commit()
    return changed
