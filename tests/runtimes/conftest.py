"""Runtime tests: a real Docker engine with demo images; a world on SQLite."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from python_on_whales import DockerClient
from sqlalchemy import text

from api.wiring import Services
from core.permissions import SYSTEM
from core.targets.service import load_declaration, parse_declaration
from runtimes.compose import ComposeAdapter
from tests.conftest import World, _services_for, _wipe, build_world, service_unavailable
from tests.support.docker import build_images, engine_problem, static_busybox
from tests.support.kube import Cluster, apps_api, deployment_manifest, running_cluster


@pytest.fixture(scope="session")
def docker_images() -> None:
    """The engine answers and the demo images exist (built once per run)."""
    problem = engine_problem()
    if problem:
        service_unavailable(f"Docker engine: {problem}")
    busybox = static_busybox()
    if busybox is None:
        service_unavailable("a static busybox is needed to build images (apt: busybox-static)")
    else:
        build_images(busybox)


@dataclass
class ComposeTarget:
    """A compose project on the real engine, declared as shop/staging."""

    world: World
    directory: Path
    project: str

    @property
    def file(self) -> Path:
        return self.directory / "compose.yaml"

    def client(self) -> DockerClient:
        adapter = self.world.services.runtimes.get("compose")
        assert isinstance(adapter, ComposeAdapter)
        return DockerClient(
            compose_files=[self.file], compose_project_name=self.project, config=adapter._config_dir
        )

    def running(self) -> dict[str, list[str]]:
        """Image of each running container, per service."""
        result: dict[str, list[str]] = {}
        for container in self.client().compose.ps():
            if container.state.running:
                service = (container.config.labels or {})["com.docker.compose.service"]
                result.setdefault(service, []).append(str(container.config.image))
        return {k: sorted(v) for k, v in result.items()}


COMPOSE = {
    "services": {
        "web": {"image": "demo/web:1", "network_mode": "none", "init": True},
        "worker": {
            "image": "demo/worker:1",
            "network_mode": "none",
            "init": True,
            "environment": {"QUEUE": "jobs"},
        },
    }
}


@pytest.fixture
def compose_target(docker_images: None, sqlite_url: str, tmp_path: Path) -> Iterator[ComposeTarget]:
    """shop/staging on Compose, brought up as an operator would (`compose up -d --wait`)."""
    services: Services = _services_for(sqlite_url)
    _wipe(services)
    world = build_world(services)
    project = f"sdtest-{uuid.uuid4().hex[:8]}"
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(COMPOSE))
    declaration = f"""
projects:
  - name: shop
    services: [web, worker, api]
    targets:
      - environment: staging
        runtime: compose
        compose_files: [compose.yaml]
        compose_project: {project}
        stable_seconds: 1
        timeout_seconds: 20
"""
    with services.sessions() as session:
        load_declaration(
            session, actor=SYSTEM, declaration=parse_declaration(declaration), base_dir=tmp_path
        )
    target = ComposeTarget(world, tmp_path, project)
    target.client().compose.up(detach=True, wait=True, wait_timeout=30, quiet=True)
    try:
        yield target
    finally:
        target.file.write_text(yaml.safe_dump(COMPOSE))  # a test may have broken it
        target.client().compose.down(timeout=1, quiet=True)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One Kubernetes API emulator (kmock + controller emulation) for the whole run."""
    with running_cluster(tmp_path_factory.mktemp("kube")) as running:
        yield running


@dataclass
class KubeTarget:
    """shop/prod on Kubernetes: Deployments web and worker in a namespace of this test's own."""

    world: World
    cluster: Cluster
    namespace: str

    def apps(self) -> Any:
        return apps_api(self.cluster.kubeconfig)

    def image(self, name: str) -> str:
        deployment = self.cluster.deployment(self.namespace, name)
        return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])

    def requests(self) -> list[Any]:
        """Requests the API server received for this test's namespace."""
        return [r for r in list(self.cluster.emulator) if r.namespace == self.namespace]

    def create(self, manifest: dict[str, Any]) -> None:
        """Create a workload through the API, as its owner would."""
        apps = self.apps()
        kind = {"Deployment": "deployment", "StatefulSet": "stateful_set"}
        suffix = kind.get(manifest["kind"], "daemon_set")
        getattr(apps, f"create_namespaced_{suffix}")(self.namespace, manifest)

    def connect(self, **extra: object) -> None:
        """Re-declare the target's connection with extra fields (containers, kinds, ...)."""
        connection = {
            "kubeconfig": str(self.cluster.kubeconfig),
            "namespace": self.namespace,
            "timeout_seconds": 10,
            **extra,
        }
        with self.world.services.engine.begin() as db:
            db.execute(
                text("UPDATE targets SET connection = :c WHERE environment = 'prod'"),
                {"c": json.dumps(connection)},
            )


@pytest.fixture
def kube_target(cluster: Cluster, sqlite_url: str) -> KubeTarget:
    services: Services = _services_for(sqlite_url)
    _wipe(services)
    world = build_world(services)
    namespace = f"ns-{uuid.uuid4().hex[:8]}"
    declaration = f"""
projects:
  - name: shop
    services: [web, worker, api]
    targets:
      - environment: prod
        runtime: kubernetes
        kubeconfig: {cluster.kubeconfig}
        namespace: {namespace}
        timeout_seconds: 10
"""
    with services.sessions() as session:
        load_declaration(
            session,
            actor=SYSTEM,
            declaration=parse_declaration(declaration),
            base_dir=cluster.kubeconfig.parent,
        )
    target = KubeTarget(world, cluster, namespace)
    apps = target.apps()
    apps.create_namespaced_deployment(namespace, deployment_manifest("web", "demo/web:1.4.1"))
    apps.create_namespaced_deployment(
        namespace, deployment_manifest("worker", "demo/worker:2.0.0", replicas=2, QUEUE="jobs")
    )
    wait_until(
        lambda: (
            cluster.deployment(namespace, "worker").get("status", {}).get("availableReplicas") == 2
        )
    )
    return target


def wait_until(condition: Callable[[], object], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)
