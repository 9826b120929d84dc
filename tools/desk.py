"""Release desk tools: retry a failed release, promote along the order, freezes.

Retry and promote only preview (a new release, nothing changes on the target), so every door
treats them like preview_release: they run at once and submitting them is the confirmation.
Declaring and lifting a freeze changes what everyone may release, so they are confirmed
before they run (a chat card, MCP elicitation); core decides who may (admins, `sre`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.orm import Session

from core.config import get_settings
from core.db import utcnow
from core.errors import InvalidInput, NotFound
from core.flows import freezes, promotion, retry
from core.ids import MAX_ID
from core.permissions import Action
from core.releases.queries import project_id_named
from core.releases.schemas import ReleaseRead
from core.targets.models import Freeze
from core.targets.schemas import FreezeRead
from core.targets.service import freeze_reasons, get_target
from core.zones import server_zone, zone_named
from tools.base import ToolContext, tool
from tools.inputs import Environment, ProjectName, ReleaseId, ServiceName

MAX_MINUTES = 90 * 24 * 60


class RetryInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    release_id: ReleaseId = Field(description="The failed release to try again, e.g. R-12.")


class PromoteInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: ProjectName
    to_environment: Environment = Field(description="Where the images go, e.g. prod.")
    from_environment: Environment | None = Field(
        default=None,
        description="Where they were proven; default: the environment before `to_environment` "
        "in the project's promotion order.",
    )
    services: list[ServiceName] | None = Field(
        default=None, max_length=50, description="Only these services; default: every one."
    )


class DeclareFreezeInput(BaseModel):
    # Exactly one of `until` and `duration_minutes`: the schema says so as the validator does.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"required": ["until"], "properties": {"until": {"type": "string"}}},
                {
                    "required": ["duration_minutes"],
                    "properties": {"duration_minutes": {"type": "integer"}},
                },
            ]
        },
    )

    project: ProjectName
    environment: Environment | None = Field(
        default=None, description="The environment to freeze; none: every one of the project."
    )
    until: datetime | None = Field(
        default=None,
        description="When the freeze ends, ISO 8601 (2026-12-01T09:00). A time without an "
        "offset is read in `timezone`.",
    )
    duration_minutes: int | None = Field(
        default=None,
        ge=1,
        le=MAX_MINUTES,
        description="Instead of `until`: how long, from when the freeze is declared.",
    )
    timezone: str | None = Field(
        default=None,
        max_length=64,
        description="IANA zone of `until` (Europe/Berlin); default: the server's.",
    )
    reason: str = Field(min_length=1, max_length=500, description="Why, e.g. incident 42.")

    @model_validator(mode="after")
    def _one_end(self) -> DeclareFreezeInput:
        if (self.until is None) == (self.duration_minutes is None):
            raise ValueError("give either until or duration_minutes")
        return self


class LiftFreezeInput(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": ["project"], "properties": {"project": {"type": "string"}}},
                {"required": ["freeze_id"], "properties": {"freeze_id": {"type": "integer"}}},
            ]
        },
    )

    project: ProjectName | None = Field(
        default=None, description="Lift the freezes of this project (with `environment`)."
    )
    environment: Environment | None = Field(
        default=None,
        description="The frozen environment; none: the project-wide freezes of the project.",
    )
    freeze_id: int | None = Field(
        default=None, ge=1, le=MAX_ID, description="Or one freeze by its id."
    )

    @model_validator(mode="after")
    def _what(self) -> LiftFreezeInput:
        if self.project is None and self.freeze_id is None:
            raise ValueError("name the project (and environment) or the freeze_id")
        return self


class ListFreezesInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: ProjectName | None = None
    active: bool = Field(default=True, description="Only freezes in force now.")


class FreezeList(BaseModel):
    """Freezes, newest first."""

    items: list[FreezeRead]


class LiftedFreezes(BaseModel):
    """The freezes lifted, and why the target may still refuse changes."""

    items: list[FreezeRead]
    still_frozen: list[str] = Field(
        default_factory=list,
        description="Freezes and change windows still holding the target, as core words them.",
    )


def freeze_until(args: DeclareFreezeInput) -> datetime:
    """The end of the freeze, aware; a naive `until` is read in the given or server zone.

    InvalidInput when it is not in the future or further than core allows, so a door can say
    so before asking anyone to confirm it.
    """
    until = _until(args)
    now = utcnow()
    if until <= now or until - now > freezes.MAX_FREEZE:
        raise InvalidInput("until must be in the future and at most 90 days away")
    return until


def _until(args: DeclareFreezeInput) -> datetime:
    if args.duration_minutes is not None:
        return utcnow() + timedelta(minutes=args.duration_minutes)
    assert args.until is not None
    if args.until.tzinfo is not None:
        return args.until
    zone = zone_named(args.timezone or server_zone(get_settings().timezone))
    return args.until.replace(tzinfo=zone)


@tool(mutating=True, permission=Action.request)
def retry_release(ctx: ToolContext, session: Session, args: RetryInput) -> ReleaseRead:
    """Retry a failed release: preview the same change again as a new release (`retry_of`
    names the failed one). Nothing changes on the target; submit it afterwards."""
    return retry.retry_release(
        session, actor=ctx.actor, runtimes=ctx.runtimes, release=args.release_id
    )


@tool(mutating=True, permission=Action.request)
def promote_release(ctx: ToolContext, session: Session, args: PromoteInput) -> ReleaseRead:
    """Promote: preview a release taking to `to_environment` the images last applied
    successfully on `from_environment` (default: the previous environment in the project's
    promotion order). Nothing changes on the target; submit it afterwards."""
    source = args.from_environment
    if source is None:
        target = get_target(session, args.project, args.to_environment)
        order = target.project.promotion or []
        if target.environment not in order or order.index(target.environment) == 0:
            raise InvalidInput(
                f"{target.project.name} declares no environment before "
                f"{target.environment}: name from_environment",
                promotion=order,
            )
        source = order[order.index(target.environment) - 1]
    return promotion.promote_release(
        session,
        actor=ctx.actor,
        runtimes=ctx.runtimes,
        project=args.project,
        source=source,
        destination=args.to_environment,
        services=args.services,
    )


@tool(mutating=True, permission=Action.view)
def declare_freeze(ctx: ToolContext, session: Session, args: DeclareFreezeInput) -> FreezeRead:
    """Freeze a project's environment (or all of them) until a time, with a reason: submit and
    apply are refused there until then (admins and the sre group only)."""
    return freezes.freeze_changes(
        session,
        actor=ctx.actor,
        project=args.project,
        environment=args.environment,
        until=freeze_until(args),
        reason=args.reason,
    )


@tool(mutating=True, permission=Action.view)
def lift_freeze(ctx: ToolContext, session: Session, args: LiftFreezeInput) -> LiftedFreezes:
    """Lift (end early) the freezes on a project's environment, or one freeze by id (admins
    and the sre group only)."""
    if args.freeze_id is not None:
        found = session.get(Freeze, args.freeze_id)
        if found is not None and args.project is not None:
            if found.project_id != project_id_named(session, args.project):
                raise NotFound(f"no freeze #{args.freeze_id}", freeze_id=args.freeze_id)
        lifted = [freezes.lift_freeze(session, actor=ctx.actor, freeze_id=args.freeze_id)]
    else:
        assert args.project is not None
        lifted = freezes.lift_freezes(
            session, actor=ctx.actor, project=args.project, environment=args.environment
        )
    project, environment = (
        (lifted[0].project, lifted[0].environment) if lifted else (args.project, args.environment)
    )
    still: list[str] = []
    if project is not None and environment is not None:
        still = freeze_reasons(session, get_target(session, project, environment))
    return LiftedFreezes(items=lifted, still_frozen=still)


@tool(mutating=False, permission=Action.view)
def list_freezes(ctx: ToolContext, session: Session, args: ListFreezesInput) -> FreezeList:
    """List freezes the caller can see, newest first: what is frozen, by whom, why and until
    when (only those in force unless `active` is false)."""
    return FreezeList(
        items=freezes.list_freezes(
            session, actor=ctx.actor, project=args.project, active=args.active
        )
    )


def _scope(args: dict[str, Any]) -> str:
    env = args.get("environment")
    return f"{args.get('project')}/{env}" if env else f"every environment of {args.get('project')}"


def freeze_title(args: dict[str, Any]) -> str:
    """The freeze as confirmed: where, until when in which zone (or for how long), why."""
    if args.get("duration_minutes"):
        minutes = int(args["duration_minutes"])
        span = f"{minutes // 60} h" if minutes % 60 == 0 else f"{minutes} min"
        when = f"for {span} from confirmation"
    else:
        written = str(args.get("until", ""))
        offset = re.search(r"(?:[+-]\d{2}:?\d{2}|Z)$", written)
        zone = (
            f"UTC{offset.group(0)}".replace("UTCZ", "UTC")
            if offset
            else str(args.get("timezone") or server_zone(get_settings().timezone))
        )
        when = f"until {written.replace('T', ' ')[:16]} ({zone})"
    return f"Freeze {_scope(args)} {when}: {args.get('reason')}?"


def lift_title(args: dict[str, Any]) -> str:
    """Which freezes confirming lifts."""
    if args.get("freeze_id") and not args.get("project"):
        return f"Lift freeze #{args['freeze_id']}?"
    return f"Lift the freeze on {_scope(args)}?"


# What confirming each freeze tool does, as the chat card and the MCP question ask it.
CONFIRM_TITLES: dict[str, Callable[[dict[str, Any]], str]] = {
    "declare_freeze": freeze_title,
    "lift_freeze": lift_title,
}

TOOLS = [retry_release, promote_release, declare_freeze, lift_freeze, list_freezes]
