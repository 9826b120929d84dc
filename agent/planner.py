"""What a planner is: chat text in, typed tool calls (or one clarifying question) out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel, Field


class ToolCall(BaseModel):
    """One call of a registry tool with its arguments."""

    tool: str
    args: dict[str, Any] = Field(default_factory=dict)


class PlanResult(BaseModel):
    """The planner's answer: calls to make, and/or text; `clarify` means ask and call nothing."""

    calls: list[ToolCall] = Field(default_factory=list)
    reply: str | None = None
    clarify: str | None = None
    usage: dict[str, int] | None = Field(default=None, description="LLM tokens, if any.")
    confirm_previews: bool = Field(
        default=False,
        description="Previews become confirmation cards instead of running at once "
        "(planners that cannot be sure the user asked for them).",
    )


@dataclass(frozen=True)
class Catalog:
    """What the user can address: project -> services and environments."""

    services: dict[str, list[str]]
    environments: dict[str, list[str]]
    # Project -> its declared promotion order (dev -> staging -> prod), where it has one.
    promotion: dict[str, list[str]] = field(default_factory=dict)

    def projects_of(self, service: str) -> list[str]:
        """Projects that have a service of this name."""
        return sorted(p for p, names in self.services.items() if service in names)


@dataclass
class PlanContext:
    """Everything a planner may use for one message."""

    catalog: Catalog
    user: str
    history: list[dict[str, str]] = field(default_factory=list)
    # Runs a read tool now and returns its output as JSON-able data (LLM planners use it).
    run_read: Callable[[ToolCall], Any] | None = None
    # Streams assistant text as it is produced.
    emit_delta: Callable[[str], None] | None = None
    # The IANA zone people's times ("until Monday 09:00") are read in, and the time now.
    timezone: str = "UTC"
    now: datetime | None = None
    # The language to answer in (`en` or `zh`); None: the language the message is written in.
    lang: str | None = None


class Planner(Protocol):
    """Turns one chat message into tool calls."""

    name: str

    def plan(self, text: str, context: PlanContext) -> PlanResult:
        """Plan the calls for `text`; never executes a mutating tool."""
        ...
