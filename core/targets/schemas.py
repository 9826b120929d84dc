"""The declaration file and the target views."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
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


COMMON_TARGET_FIELDS = frozenset(
    {"environment", "runtime", "risk_tier", "preview_ttl_minutes", "apply_on_approval"}
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
    apply_on_approval: bool
    connection: dict[str, Any]


class TargetStatus(BaseModel):
    """Live state of a target's services."""

    project: str
    environment: str
    runtime: str
    simulated: bool
    services: dict[str, ServiceState]
    active_release: str | None = None
