"""The sandbox runtime: a simulated target kept in the database, always labelled simulated.

An image tag containing `broken` or `unhealthy` simulates a rollout that never turns healthy,
so the failed path and rollbacks can be tried without infrastructure.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from pydantic import Field
from sqlalchemy import JSON, Engine, MetaData, String, bindparam, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from runtimes.base import (
    ApplyResult,
    Connection,
    Diagnosis,
    LiveState,
    Plan,
    Progress,
    RuntimeAdapter,
    ServiceChange,
    ServiceDiagnosis,
    ServiceSpec,
    ServiceState,
    TargetRef,
    desired_spec,
    image_tag,
    make_plan,
)

FAILING_TAG_WORDS = ("broken", "unhealthy")


class SandboxBase(DeclarativeBase):
    """The sandbox's own tables: it is a runtime, not part of core."""

    metadata = MetaData()


class SandboxService(SandboxBase):
    """The simulated live state of one service on one target."""

    __tablename__ = "sandbox_services"

    target_id: Mapped[int] = mapped_column(primary_key=True)
    service: Mapped[str] = mapped_column(String(64), primary_key=True)
    image: Mapped[str | None] = mapped_column(String(255))
    replicas: Mapped[int] = mapped_column(default=1)
    env: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    health: Mapped[str] = mapped_column(String(16), default="healthy")
    updated_at: Mapped[str] = mapped_column(String(40))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class SandboxConnection(Connection):
    """A simulated target: the images it starts with and how long a rollout takes."""

    images: dict[str, str] | None = Field(default=None, description="Initial image per service.")
    delay_seconds: float | None = Field(
        default=None, ge=0, le=60, description="How long each simulated rollout takes."
    )


# Built once: every status question reads it.
_LIVE = select(
    SandboxService.service,
    SandboxService.image,
    SandboxService.replicas,
    SandboxService.env,
    SandboxService.health,
).where(SandboxService.target_id == bindparam("target_id"))


class SandboxAdapter(RuntimeAdapter):
    """Simulated runtime: state in the database, instant (or `delay_seconds`) rollouts."""

    name = "sandbox"
    simulated = True
    connection_model = SandboxConnection

    def __init__(self, engine: Engine, reads: Engine | None = None) -> None:
        self._engine = engine
        # Describing only reads: given a read engine (SQLite: no write lock; PostgreSQL: no
        # transaction), a status question never queues behind the writers.
        self._reads = reads or engine

    @staticmethod
    def _default(target: TargetRef, service: str) -> ServiceState:
        image = target.connection.get("images", {}).get(service)
        return ServiceState(
            image=image or f"{target.project}/{service}:1.0.0",
            replicas=1,
            health="healthy",
            running=1,
        )

    def describe(self, target: TargetRef) -> LiveState:
        """Read the simulated state; a service never deployed runs its initial image."""
        with self._reads.connect() as connection:
            rows = {
                row.service: row
                for row in connection.execute(_LIVE, {"target_id": target.target_id})
            }
        services: dict[str, ServiceState] = {}
        for name in target.services:
            row = rows.get(name)
            if row is None:
                services[name] = self._default(target, name)
                continue
            healthy = row.health == "healthy"
            services[name] = ServiceState(
                image=row.image,
                replicas=row.replicas,
                env=dict(row.env),
                health="healthy" if healthy else "unhealthy",
                running=row.replicas if healthy else 0,
            )
        return LiveState(services=services, simulated=True)

    def plan(self, target: TargetRef, changes: dict[str, ServiceChange]) -> Plan:
        """Diff the simulated live state against it with the changes applied."""
        live = self.describe(target)
        desired = {
            name: desired_spec(live.services[name], change) for name, change in changes.items()
        }
        return make_plan(target, live, desired, simulated=True)

    def apply(self, plan: Plan, progress: Progress) -> ApplyResult:
        """Write the desired specs; a tag saying broken/unhealthy never turns healthy."""
        delay = float(plan.target.connection.get("delay_seconds", 0))
        failures: list[str] = []
        for name, spec in plan.desired.items():
            # progress() writes in its own transaction: report outside ours.
            progress(name, "info", f"rolling out {spec.image} x{spec.replicas} (simulated)")
            if delay:
                time.sleep(delay)
            tag = (image_tag(spec.image) or "").lower()
            healthy = not any(word in tag for word in FAILING_TAG_WORDS)
            self._write(plan.target.target_id, name, spec, "healthy" if healthy else "unhealthy")
            if healthy:
                progress(name, "info", f"{spec.replicas}/{spec.replicas} replicas healthy")
            else:
                progress(name, "error", f"{spec.image} never became healthy (simulated)")
                failures.append(f"{name}: {spec.image} is unhealthy")
        if failures:
            return ApplyResult(ok=False, reason="; ".join(failures), applied=plan.desired)
        return ApplyResult(ok=True, applied=plan.desired)

    def _write(self, target_id: int, service: str, spec: ServiceSpec, health: str) -> None:
        with Session(self._engine) as session, session.begin():
            row = session.get(SandboxService, (target_id, service)) or SandboxService(
                target_id=target_id, service=service
            )
            row.image, row.replicas, row.env = spec.image, spec.replicas, dict(spec.env)
            row.health, row.updated_at = health, _now()
            session.add(row)

    def diagnose(self, target: TargetRef, service: str | None = None) -> Diagnosis:
        """Simulated health and a log line per service."""
        live = self.describe(target)
        names = [service] if service else list(live.services)
        return Diagnosis(
            services={
                name: ServiceDiagnosis(
                    health=live.services[name].health,
                    logs=[f"(simulated) {name} runs {live.services[name].image}"],
                    events=[],
                )
                for name in names
                if name in live.services
            },
            simulated=True,
        )

    def set_live(self, target_id: int, service: str, spec: ServiceSpec) -> None:
        """Change the simulated live state by hand, as an operator outside shipdeck would."""
        self._write(target_id, service, spec, "healthy")
