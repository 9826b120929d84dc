"""A Kubernetes API for tests: kmock's emulator on a real port, plus what kmock leaves out.

kmock serves the Kubernetes HTTP API from memory, but (see ../shared/LIBRARIES.md) it only
merges patches: it applies `dryRun=All` for real, keeps no `metadata.generation`, and runs
no Deployment controller. `ClusterEmulator` fills those gaps the way the API server and the
controller would, and says so in each place:

- dry run: the patched object is returned, then the stored history is rolled back;
- generation: a patch that changes `spec` bumps `metadata.generation`, like the API server;
- controller: a background task sets `status` (observedGeneration, replicas, updated /
  ready / available replicas) like the Deployment controller once a rollout finishes; an
  image whose tag contains `broken` never becomes available and ends with the condition
  Progressing=False / ProgressDeadlineExceeded plus a pod event, like a bad rollout would.

The emulator runs in its own thread and event loop, so the adapter under test talks to it
exactly as to a real API server: over HTTP, configured by an ordinary kubeconfig file.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kmock
import yaml

DEPLOYMENTS = kmock.resource(group="apps", version="v1", plural="deployments")
EVENTS = kmock.resource(group="", version="v1", plural="events")
CONTROLLER_DELAY = 0.3


class ClusterEmulator(kmock.KubernetesEmulator):
    """kmock plus dry-run, generation and the Deployment controller (see the module doc)."""

    async def _handle(self, request: Any) -> Any:
        if request.action == kmock.action.UPDATE and request.resource == DEPLOYMENTS:
            key = (request.resource, request.namespace, request.name)
            obj = self.objects[key] if key in self.objects else None
            before = copy.deepcopy(obj.raw) if obj is not None and not obj.deleted else None
            if before is not None and isinstance(request.data, dict):
                # The API server bumps generation on every change to spec.
                if "spec" in request.data and _merged(before, request.data) != before.get("spec"):
                    generation = before.get("metadata", {}).get("generation", 1) + 1
                    request.data.setdefault("metadata", {})["generation"] = generation
            response = await super()._handle(request)
            if request.params.get("dryRun") == "All" and before is not None:
                # kmock persisted the dry-run patch: forget it, as a real dry run never stored it.
                async with self._lock:
                    self.objects[key].history.pop()
            return response
        if request.action == kmock.action.CREATE and request.resource == DEPLOYMENTS:
            if isinstance(request.data, dict):
                request.data.setdefault("metadata", {}).setdefault("generation", 1)
        return await super()._handle(request)

    async def run_controller(self, stop: asyncio.Event) -> None:
        """Finish rollouts the way the Deployment controller reports them in status."""
        while not stop.is_set():
            await asyncio.sleep(CONTROLLER_DELAY)
            async with self._lock:
                for (resource, namespace, name), obj in list(self.objects.items()):
                    if resource != DEPLOYMENTS or obj.deleted:
                        continue
                    self._reconcile(namespace or "default", name, obj)

    def _reconcile(self, namespace: str, name: str, obj: Any) -> None:
        generation = obj.get("metadata", {}).get("generation", 1)
        status = obj.get("status") or {}
        if status.get("observedGeneration") == generation:
            return
        replicas = obj.get("spec", {}).get("replicas", 1)
        containers = obj["spec"]["template"]["spec"]["containers"]
        broken = any("broken" in c.get("image", "") for c in containers)
        if broken:
            obj["status"] = {
                "observedGeneration": generation,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": 0,
                "availableReplicas": 0,
                "conditions": [
                    {
                        "type": "Progressing",
                        "status": "False",
                        "reason": "ProgressDeadlineExceeded",
                        "message": f'ReplicaSet "{name}-7d9f" has timed out progressing.',
                    }
                ],
            }
            event_name = f"{name}-7d9f-x2x4q.{generation}"
            self.objects[EVENTS, namespace, event_name] = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": event_name, "namespace": namespace},
                "involvedObject": {"kind": "Pod", "name": f"{name}-7d9f-x2x4q"},
                "reason": "BackOff",
                "type": "Warning",
                "message": f"Back-off restarting failed container {containers[0]['name']}",
            }
        else:
            obj["status"] = {
                "observedGeneration": generation,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
                ],
            }


def _merged(before: dict[str, Any], patch: dict[str, Any]) -> Any:
    merged = copy.deepcopy(before.get("spec", {}))

    def merge(into: dict[str, Any], changes: dict[str, Any]) -> None:
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = copy.deepcopy(value)

    merge(merged, patch.get("spec", {}))
    return merged


@dataclass
class Cluster:
    """A running emulator: its URL, a kubeconfig file for it, and its objects."""

    url: str
    kubeconfig: Path
    emulator: ClusterEmulator
    loop: asyncio.AbstractEventLoop

    def call(self, coroutine: Any) -> Any:
        """Run a coroutine on the emulator's loop (to touch its objects safely)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)

    def deployment(self, namespace: str, name: str) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            async with self.emulator._lock:
                return copy.deepcopy(self.emulator.objects[DEPLOYMENTS, namespace, name].raw)

        result: dict[str, Any] = self.call(read())
        return result


def deployment_manifest(name: str, image: str, replicas: int = 1, **env: str) -> dict[str, Any]:
    """A schema-complete Deployment with one container named after the service."""
    container: dict[str, Any] = {"name": name, "image": image}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container]},
            },
        },
    }


@contextmanager
def running_cluster(directory: Path) -> Iterator[Cluster]:
    """Start the emulator on a free loopback port in a thread; yield it with a kubeconfig."""
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def main() -> None:
        stop = asyncio.Event()
        holder["stop"] = stop
        async with ClusterEmulator() as emulator, kmock.Server(emulator) as server:
            emulator.resources.load_bundled()
            holder["emulator"], holder["url"] = emulator, str(server.url).rstrip("/")
            controller = asyncio.create_task(emulator.run_controller(stop))
            ready.set()
            await stop.wait()
            await controller

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    if not ready.wait(timeout=20):
        raise RuntimeError("the Kubernetes emulator did not start")
    kubeconfig = directory / "kubeconfig.yaml"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": holder["url"]}}],
                "users": [{"name": "tester", "user": {"token": "test-token"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "tester"}}],
                "current-context": "kmock",
            }
        )
    )
    try:
        yield Cluster(holder["url"], kubeconfig, holder["emulator"], loop)
    finally:
        loop.call_soon_threadsafe(holder["stop"].set)
        thread.join(timeout=10)


def apps_api(kubeconfig: str | Path) -> Any:
    """An AppsV1Api from a kubeconfig; typed loosely because tests pass plain manifests."""
    from kubernetes import client, config

    return client.AppsV1Api(config.new_client_from_config(config_file=str(kubeconfig)))  # type: ignore[no-untyped-call]
