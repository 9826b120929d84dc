"""The runtime-adapter interface: typed models in, typed models out."""

from __future__ import annotations

import hashlib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

RiskLevel = Literal["low", "medium", "high"]
RISK_RANK: dict[str, int] = {"low": 0, "medium": 1, "high": 2}


# Variable names as the schema states them, so a client (or a fuzzer) knows the rule up front.
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
EnvVars = Annotated[dict[EnvName, str], Field(json_schema_extra={"additionalProperties": False})]


class ServiceChange(BaseModel):
    """A requested change to one service; unset fields stay as they are live."""

    model_config = ConfigDict(extra="forbid")

    image_tag: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
        description="New tag for the service's current image, e.g. 1.4.2.",
    )
    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$",
        description="A whole new image reference; replaces the current one.",
    )
    replicas: int | None = Field(default=None, ge=0, le=1000, description="Desired replicas.")
    env: EnvVars | None = Field(
        default=None, description="Environment variables to set (merged over the live ones)."
    )

    unset_env: list[EnvName] | None = Field(
        default=None, max_length=200, description="Environment variables to remove."
    )

    def is_empty(self) -> bool:
        """True when the change asks for nothing."""
        return (
            self.image_tag is None
            and self.image is None
            and self.replicas is None
            and (not self.env)
            and (not self.unset_env)
        )


class ServiceSpec(BaseModel):
    """The deployable state of one service."""

    image: str | None = None
    replicas: int = 1
    env: dict[str, str] = Field(default_factory=dict)


class ServiceState(ServiceSpec):
    """The live state of one service, with health."""

    health: Literal["healthy", "unhealthy", "starting", "absent", "unknown"] = "unknown"
    running: int = 0


class LiveState(BaseModel):
    """What runs on a target now."""

    services: dict[str, ServiceState]
    simulated: bool = False


class TargetRef(BaseModel):
    """What an adapter needs to reach a target."""

    target_id: int
    project: str
    environment: str
    runtime: str
    services: list[str]
    connection: dict[str, Any] = Field(default_factory=dict)


class FieldChange(BaseModel):
    """One field's live and desired value."""

    before: Any
    after: Any


class RiskHint(BaseModel):
    """Why a change is risky, and how much."""

    level: RiskLevel
    message: str


class Plan(BaseModel):
    """A computed change: desired specs, per-service diff and the live state it started from."""

    target: TargetRef
    desired: dict[str, ServiceSpec]
    diff: dict[str, dict[str, FieldChange]]
    base_fingerprint: str
    risk_hints: list[RiskHint] = Field(default_factory=list)
    simulated: bool = False


class ApplyResult(BaseModel):
    """How an apply ended."""

    ok: bool
    reason: str | None = None
    applied: dict[str, ServiceSpec] = Field(default_factory=dict)


class ServiceDiagnosis(BaseModel):
    """Health, recent logs and events of one service."""

    health: str
    logs: list[str] = Field(default_factory=list)
    events: list[str] = Field(default_factory=list)


class Diagnosis(BaseModel):
    """Diagnostics of a target."""

    services: dict[str, ServiceDiagnosis]
    simulated: bool = False


Progress = Callable[[str | None, str, str], None]
"""progress(service, level, message): called by apply as it goes."""


class RuntimeUnavailable(Exception):
    """The runtime could not be reached (engine down, API server unreachable, bad credentials)."""


class RuntimeRefused(Exception):
    """The runtime refuses the request as given (service not defined, spec does not parse)."""


def redact(text: str, limit: int = 300) -> str:
    """A tool's error line without quoted fragments, which can be lines of the file it read.

    `docker compose config` quotes the offending text (`additional properties 'root:$6$...'
    not allowed`) and YAML loaders quote snippets; callers see the shape of the problem and
    where, never the file's contents.
    """
    text = re.sub(r"'[^'\n]*'|\"[^\"\n]*\"|`[^`\n]*`", "'…'", text)
    return text[:limit]


class DeclaredPath:
    """Marks a connection field that names files on the server (`Annotated[..., DeclaredPath()]`).

    Core confines such paths to the declaration's folder or an allowed root when it loads
    a declaration, whichever adapter declares them.
    """


class Connection(BaseModel):
    """How to reach a target; each adapter declares its own fields by subclassing this."""

    model_config = ConfigDict(extra="forbid")


C = TypeVar("C", bound=Connection)
_KNOWN: dict[str, type[RuntimeAdapter]] = {}


def connection_of(model: type[C], connection: dict[str, Any]) -> C:
    """A stored connection read as an adapter's model (keys it does not know are ignored)."""
    return model.model_validate({k: v for k, v in connection.items() if k in model.model_fields})


def known_adapters() -> dict[str, type[RuntimeAdapter]]:
    """Adapter classes this process has loaded, by runtime name (the declaration's choices)."""
    return dict(_KNOWN)


def is_simulated(runtime: str) -> bool:
    """True when the named runtime's adapter says it is simulated (sandbox)."""
    adapter = _KNOWN.get(runtime)
    return bool(adapter is not None and adapter.simulated)


class RuntimeAdapter(ABC):
    """One implementation per runtime; product layers only call this interface.

    Each adapter names its runtime, says whether it is simulated, and owns the model of its
    connection (what a declaration may say about a target of this runtime).
    """

    name: ClassVar[str]
    simulated: ClassVar[bool] = False
    connection_model: ClassVar[type[Connection]] = Connection

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            _KNOWN[cls.name] = cls

    @abstractmethod
    def describe(self, target: TargetRef) -> LiveState:
        """Read the live state of every service of the target."""

    @abstractmethod
    def plan(self, target: TargetRef, changes: dict[str, ServiceChange]) -> Plan:
        """Diff live state against live-plus-changes.

        Args:
            target: where to look.
            changes: requested change per service.
        Returns:
            The plan, with the base fingerprint of the live state it was computed from.
        """

    @abstractmethod
    def apply(self, plan: Plan, progress: Progress) -> ApplyResult:
        """Make the plan's desired state live and wait for health.

        Args:
            plan: a plan from `plan()`.
            progress: called with (service, level, message) as the apply goes.
        Returns:
            ok, or not ok with a reason; never raises for a failed rollout.
        """

    @abstractmethod
    def diagnose(self, target: TargetRef, service: str | None = None) -> Diagnosis:
        """Recent logs, events and health per service."""

    def fingerprint(self, target: TargetRef, services: list[str]) -> str:
        """The base fingerprint of everything that decides what apply will do to `services`.

        `plan()` stamps the same value on its plan; core compares them before apply (drift).
        An adapter whose apply depends on more than the live specs (files it renders, whole
        server-side objects) overrides this and covers those inputs too.
        """
        return fingerprint(self.describe(target), services)

    def observe(self, target: TargetRef, services: list[str]) -> tuple[LiveState, str]:
        """`describe()` and `fingerprint()` together, for the drift check before apply.

        An adapter that reads the same state for both overrides this to read it once.
        """
        return self.describe(target), self.fingerprint(target, services)


def desired_spec(live: ServiceSpec, change: ServiceChange) -> ServiceSpec:
    """Apply a change to a live spec: a tag replaces the tag of the current image."""
    image = live.image
    if change.image is not None:
        image = change.image
    elif change.image_tag is not None:
        image = f"{image_repository(image or '')}:{change.image_tag}"
    env = dict(live.env)
    env.update(change.env or {})
    for name in change.unset_env or ():
        env.pop(name, None)
    replicas = live.replicas if change.replicas is None else change.replicas
    return ServiceSpec(image=image, replicas=replicas, env=env)


def image_repository(image: str) -> str:
    """The image reference without its tag or digest (`demo/web:1` -> `demo/web`)."""
    image = image.split("@", 1)[0]
    slash = image.rfind("/")
    colon = image.rfind(":")
    return image[:colon] if colon > slash else image


def image_tag(image: str | None) -> str | None:
    """The tag of an image reference, if it has one."""
    if not image:
        return None
    ref = image.split("@", 1)[0]
    slash, colon = ref.rfind("/"), ref.rfind(":")
    return ref[colon + 1 :] if colon > slash else None


def diff_specs(live: ServiceSpec, desired: ServiceSpec) -> dict[str, FieldChange]:
    """Field-by-field differences between a live and a desired spec."""
    changes: dict[str, FieldChange] = {}
    if live.image != desired.image:
        changes["image"] = FieldChange(before=live.image, after=desired.image)
    if live.replicas != desired.replicas:
        changes["replicas"] = FieldChange(before=live.replicas, after=desired.replicas)
    for name in sorted(set(live.env) | set(desired.env)):
        if live.env.get(name) != desired.env.get(name):
            changes[f"env.{name}"] = FieldChange(
                before=live.env.get(name), after=desired.env.get(name)
            )
    return changes


def _major(tag: str | None) -> int | None:
    match = re.match(r"^v?(\d+)\.", tag or "")
    return int(match.group(1)) if match else None


def risk_hints(service: str, diff: dict[str, FieldChange]) -> list[RiskHint]:
    """Generic risk hints for one service's diff (scale to zero, major jumps, downgrades)."""
    hints: list[RiskHint] = []
    if "replicas" in diff and diff["replicas"].after == 0:
        hints.append(RiskHint(level="high", message=f"{service}: replicas to 0"))
    if "image" in diff:
        before, after = diff["image"].before, diff["image"].after
        if before and after and image_repository(before) != image_repository(after):
            hints.append(RiskHint(level="medium", message=f"{service}: image repository changes"))
        old, new = _major(image_tag(before)), _major(image_tag(after))
        if old is not None and new is not None and new > old:
            hints.append(RiskHint(level="medium", message=f"{service}: major version jump"))
        if old is not None and new is not None and new < old:
            hints.append(RiskHint(level="medium", message=f"{service}: major version downgrade"))
    if any(key.startswith("env.") for key in diff):
        hints.append(RiskHint(level="low", message=f"{service}: environment changes"))
    return hints


def fingerprint(live: LiveState, services: list[str], inputs: object = None) -> str:
    """SHA-256 over image, replicas and env of the named services (health excluded).

    `inputs` adds what else decides the apply (a rendered compose config, live object specs);
    it must be JSON-serialisable and is hashed with sorted keys.
    """
    payload: dict[str, Any] = {
        name: live.services[name].model_dump(include={"image", "replicas", "env"})
        if name in live.services
        else None
        for name in sorted(services)
    }
    if inputs is not None:
        payload = {"live": payload, "inputs": inputs}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def make_plan(
    target: TargetRef,
    live: LiveState,
    desired: dict[str, ServiceSpec],
    *,
    simulated: bool = False,
    base_fingerprint: str | None = None,
) -> Plan:
    """The plan from live state to desired specs: diff, risk hints, base fingerprint."""
    diff = {name: diff_specs(live.services[name], spec) for name, spec in desired.items()}
    return Plan(
        target=target,
        desired=desired,
        diff=diff,
        base_fingerprint=base_fingerprint or fingerprint(live, list(desired)),
        risk_hints=[hint for name, d in diff.items() for hint in risk_hints(name, d)],
        simulated=simulated,
    )
