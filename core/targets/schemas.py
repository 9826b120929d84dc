"""The declaration file and the target views."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.environments import RiskTier, default_tier
from runtimes.base import ServiceState

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


class TargetDecl(BaseModel):
    """A target: environment, runtime and how to reach it."""

    model_config = ConfigDict(extra="forbid")

    environment: str = Field(pattern=NAME_PATTERN)
    runtime: Literal["sandbox", "compose", "kubernetes"]
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
    compose_files: list[str] | None = None
    compose_project: str | None = None
    docker_host: str | None = None
    namespace: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    stable_seconds: float | None = Field(
        default=None,
        ge=0,
        le=600,
        description="Compose: how long a service without a health "
        "check must run without restarting to count as healthy (default 5).",
    )
    timeout_seconds: float | None = Field(
        default=None, gt=0, le=3600, description="How long an apply waits for health (default 120)."
    )
    containers: dict[str, str] | None = Field(
        default=None,
        description="Kubernetes: the container to change per service, when pods run several.",
    )
    kinds: dict[str, Literal["Deployment", "StatefulSet", "DaemonSet"]] | None = Field(
        default=None, description="Kubernetes: workload kind per service (default: found)."
    )
    force_conflicts: bool | None = Field(
        default=None,
        description="Kubernetes: take over fields another field manager owns (audited with "
        "the declaration load); off by default, so conflicts are reported in the preview.",
    )
    images: dict[str, str] | None = Field(default=None, description="Sandbox: initial images.")
    delay_seconds: float | None = Field(default=None, ge=0, le=60, description="Sandbox only.")

    @model_validator(mode="after")
    def _connection_fits_runtime(self) -> TargetDecl:
        if self.runtime == "compose" and not self.compose_files:
            raise ValueError("a compose target needs compose_files")
        if self.runtime == "kubernetes" and not self.namespace:
            raise ValueError("a kubernetes target needs a namespace")
        return self

    def connection(self, base_dir: Path | None = None) -> dict[str, Any]:
        """The runtime-specific fields, as stored on the target; paths made absolute."""
        skip = {
            "environment",
            "runtime",
            "risk_tier",
            "preview_ttl_minutes",
            "apply_on_approval",
            "approval_timeout_hours",
            "windows",
        }
        connection = self.model_dump(exclude=skip, exclude_none=True)
        if base_dir is not None:
            if self.compose_files:
                connection["compose_files"] = [
                    str((base_dir / Path(f).expanduser()).resolve()) for f in self.compose_files
                ]
            if self.kubeconfig:
                connection["kubeconfig"] = str(
                    (base_dir / Path(self.kubeconfig).expanduser()).resolve()
                )
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
