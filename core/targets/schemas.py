"""The declaration file and the target views."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from core.environments import RiskTier, default_tier
from core.errors import InvalidInput
from core.targets.paths import confine
from runtimes.base import Connection, DeclaredPath, ServiceState, known_adapters

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class StepDecl(BaseModel):
    """One approval step: `count` distinct approvers from `group`."""

    model_config = ConfigDict(extra="forbid")

    group: str = Field(pattern=NAME_PATTERN, description="owners, approvers, or a declared group")
    count: int = Field(default=1, ge=1, le=10)


class PolicyDecl(BaseModel):
    """Approval steps for releases matching environment / risk tier (unset = any)."""

    model_config = ConfigDict(extra="forbid")

    environment: str | None = Field(default=None, pattern=NAME_PATTERN)
    risk_tier: RiskTier | None = None
    emergency: bool = Field(default=False, description="Applies to emergency rollbacks.")
    steps: list[StepDecl] = Field(default_factory=list, description="Empty: approved on submit.")

    @model_validator(mode="after")
    def _emergency_never_none(self) -> PolicyDecl:
        if self.emergency and not self.steps:
            raise ValueError("an emergency policy may be lighter, never empty")
        return self


class WindowDecl(BaseModel):
    """A change window: from each cron match (in `timezone`), for `duration_minutes`.

    `deny` windows refuse submit and apply while open; when a target has `allow` windows,
    changes are accepted only while one of them is open.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["allow", "deny"]
    cron: str = Field(max_length=120, description="minute hour day-of-month month day-of-week")
    duration_minutes: int = Field(ge=1, le=7 * 24 * 60)
    timezone: str = Field(default="UTC", max_length=64)
    environments: list[str] | None = Field(
        default=None, description="Project-level windows: the environments they cover (all)."
    )
    reason: str | None = Field(default=None, max_length=200)

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from core.windows import parse_cron

        parse_cron(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value


COMMON_TARGET_FIELDS = frozenset(
    {
        "environment",
        "runtime",
        "risk_tier",
        "preview_ttl_minutes",
        "apply_on_approval",
        "approval_timeout_hours",
        "windows",
    }
)


class TargetDecl(BaseModel):
    """A target: environment, runtime, and its runtime's connection fields.

    The fields here are the ones every target has. A declaration is parsed with one variant
    per registered runtime adapter (`declaration_model`): this class plus the adapter's
    connection model, chosen by `runtime`.
    """

    model_config = ConfigDict(extra="forbid")

    environment: str = Field(pattern=NAME_PATTERN)
    runtime: str = Field(description="The runtime adapter: sandbox, compose, kubernetes, ...")
    risk_tier: RiskTier | None = None
    preview_ttl_minutes: float | None = Field(default=None, gt=0, le=7 * 24 * 60)
    apply_on_approval: bool = False
    windows: list[WindowDecl] = Field(default_factory=list, max_length=20)
    approval_timeout_hours: float | None = Field(
        default=None,
        gt=0,
        le=90 * 24,
        description="How long an approval ticket waits before it times out (default 72).",
    )

    def connection(
        self, base_dir: Path | None = None, roots: Sequence[Path] = (), where: str = "target"
    ) -> dict[str, Any]:
        """The runtime-specific fields, as stored on the target; file paths made absolute.

        Every field the adapter marks as a path (compose files, kubeconfig) must lie in
        `base_dir` (the declaration's folder) or one of `roots`, else InvalidInput: a
        declaration is no way to read any file on the server.
        """
        connection = self.model_dump(
            exclude=set(COMMON_TARGET_FIELDS), exclude_none=True, exclude_defaults=True
        )
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if value is None or not any(isinstance(m, DeclaredPath) for m in info.metadata):
                continue
            here = f"{where}.{name}"
            if isinstance(value, list):
                connection[name] = [
                    confine(v, base_dir=base_dir, roots=roots, where=here) for v in value
                ]
            else:
                connection[name] = confine(str(value), base_dir=base_dir, roots=roots, where=here)
        return connection

    def tier(self) -> RiskTier:
        """The declared tier, or the default for the environment."""
        return self.risk_tier or default_tier(self.environment)


class ProjectDecl(BaseModel):
    """A project with its services, targets, people and policies."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    services: list[str] = Field(min_length=1)
    targets: list[TargetDecl] = Field(default_factory=list)
    owners: list[str] = Field(default_factory=list)
    approvers: list[str] = Field(default_factory=list)
    requesters: list[str] = Field(default_factory=list)
    viewers: list[str] = Field(default_factory=list)
    policies: list[PolicyDecl] = Field(default_factory=list)
    windows: list[WindowDecl] = Field(default_factory=list, max_length=20)
    promotion: list[str] | None = Field(
        default=None,
        description="Promotion order, e.g. [dev, staging, prod]: a release to a later "
        "environment needs its images applied on the one before (admins may override).",
    )

    @field_validator("services")
    @classmethod
    def _service_names(cls, services: list[str]) -> list[str]:
        for name in services:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"{name!r} is not a valid service name")
        if len(set(services)) != len(services):
            raise ValueError("services are listed twice")
        return services

    @model_validator(mode="after")
    def _unique_environments(self) -> ProjectDecl:
        envs = [t.environment for t in self.targets]
        if len(set(envs)) != len(envs):
            raise ValueError(f"project {self.name} declares an environment twice")
        if self.promotion is not None:
            if len(set(self.promotion)) != len(self.promotion) or len(self.promotion) < 2:
                raise ValueError("promotion lists two or more environments, each once")
            unknown = [e for e in self.promotion if e not in envs]
            if unknown:
                raise ValueError(f"promotion names undeclared environments: {unknown}")
        return self


class Declaration(BaseModel):
    """The whole declaration file."""

    model_config = ConfigDict(extra="forbid")

    groups: dict[str, list[str]] = Field(default_factory=dict)
    policies: list[PolicyDecl] = Field(default_factory=list)
    projects: list[ProjectDecl] = Field(default_factory=list)


def declaration_model(
    connections: Mapping[str, type[Connection]] | None = None,
) -> type[Declaration]:
    """The declaration model whose targets are a union discriminated by `runtime`.

    One variant per runtime: TargetDecl plus that adapter's connection model. Default: the
    adapters this process has loaded (core never imports them; they register themselves).
    """
    if connections is None:
        connections = {name: a.connection_model for name, a in known_adapters().items()}
    return _declaration_model(tuple(sorted(connections.items())))


@lru_cache(maxsize=8)
def _declaration_model(connections: tuple[tuple[str, type[Connection]], ...]) -> type[Declaration]:
    variants: list[type[BaseModel]] = []
    for name, model in connections:
        tag: Any = Literal[name]
        variants.append(
            create_model(
                f"{name.capitalize()}TargetDecl",
                __base__=(TargetDecl, model),
                runtime=(tag, Field(description=f"The {name} runtime.")),
            )
        )
    if not variants:
        raise InvalidInput("no runtime adapters are loaded; targets cannot be declared")
    target: Any = (
        Annotated[Union[tuple(variants)], Field(discriminator="runtime")]  # noqa: UP007
        if len(variants) > 1
        else variants[0]
    )
    project = create_model(
        "ProjectDecl", __base__=ProjectDecl, targets=(list[target], Field(default_factory=list))
    )
    declaration: type[Declaration] = create_model(
        "Declaration",
        __base__=Declaration,
        projects=(list[project], Field(default_factory=list)),
    )
    return declaration


class TargetRead(BaseModel):
    """A target as pages and tools see it."""

    project: str
    environment: str
    runtime: str
    risk_tier: str
    simulated: bool
    services: list[str]
    preview_ttl_seconds: int
    approval_timeout_seconds: int
    apply_on_approval: bool
    connection: dict[str, Any]
    windows: list[dict[str, Any]] = Field(
        default_factory=list, description="Declared change windows (allow/deny, cron, zone)."
    )
    frozen: list[str] = Field(
        default_factory=list, description="Why submit and apply are refused here now (empty: not)."
    )


class TargetStatus(BaseModel):
    """Live state of a target's services."""

    project: str
    environment: str
    runtime: str
    simulated: bool
    services: dict[str, ServiceState]
    active_release: str | None = None


class FreezeRead(BaseModel):
    """An ad-hoc freeze: who froze which targets, why, until when."""

    id: int
    project: str
    environment: str | None = Field(description="None: every environment of the project.")
    reason: str
    until: datetime
    created_by: str
    created_at: datetime
    lifted_by: str | None
    lifted_at: datetime | None
    active: bool


class FreezeInfo(BaseModel):
    """Why changes to a release's target are refused right now (ad-hoc freeze or window)."""

    reason: str = Field(description="The freeze's reason, or what the change window says.")
    until: datetime | None = Field(
        description="When it ends (the freeze's end, the deny window's close); None when the "
        "target waits for its next allow window."
    )
    declared_by: str | None = Field(description="Who declared the freeze; None for a window.")
    window: str | None = Field(
        description="The change window that holds it, e.g. `deny 0 22 * * 5 (Europe/Berlin)`; "
        "None for an ad-hoc freeze."
    )
