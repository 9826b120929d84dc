"""A Kubernetes API for tests: kmock's emulator on a real port, plus what kmock leaves out.

kmock serves the Kubernetes HTTP API from memory, but (see ../shared/LIBRARIES.md) it only
merges patches: it applies `dryRun=All` for real, keeps no `metadata.generation` or
`managedFields`, serves no pod logs, ignores field selectors and runs no controllers.
`ClusterEmulator` fills those gaps the way the API server and the controllers would, and
says so in each place:

- dry run: the patched object is returned, then the stored history is rolled back; a
  workload annotated `shipdeck.test/webhook: refuse-dry-run` is refused like an admission
  webhook without `sideEffects: None` refuses every dry run (400);
- generation: a change to `spec` bumps `metadata.generation`, like the API server;
- server-side apply (`application/apply-patch+yaml`): lists of named items merge by name,
  `managedFields` record which manager owns which leaf, a non-forced apply that changes a
  leaf another manager owns answers 409 with the server's message, `force=true` takes it
  over, and a plain field the manager stops sending (and nobody else owns) is removed;
- controllers: Deployments, StatefulSets and DaemonSets get the `status` their controllers
  report once a rollout finishes, plus pods (with logs per container) of the current
  generation. Image tags steer the outcome: `broken` never becomes available (Deployments
  end with Progressing=False / ProgressDeadlineExceeded, pods crash-loop with a previous
  run's logs and events out of time order); `surge` keeps one old replica running forever
  (status.replicas > updatedReplicas) and the controller never reports a deadline;
- pod logs (`pods/NAME/log`): 400 without `container=` on a multi-container pod, `previous`
  only for a container that restarted, as the kubelet answers;
- events: `fieldSelector` on involvedObject.kind/name is honoured.

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

import aiohttp.web
import kmock
import yaml
from kmock._internal.k8s import KubernetesError

from tests.support.kube_ssa import fields_of, leaves, owned_paths, ssa_merge, value_at

DEPLOYMENTS = kmock.resource(group="apps", version="v1", plural="deployments")
STATEFULSETS = kmock.resource(group="apps", version="v1", plural="statefulsets")
DAEMONSETS = kmock.resource(group="apps", version="v1", plural="daemonsets")
HPAS = kmock.resource(group="autoscaling", version="v2", plural="horizontalpodautoscalers")
EVENTS = kmock.resource(group="", version="v1", plural="events")
PODS = kmock.resource(group="", version="v1", plural="pods")
WORKLOADS = {DEPLOYMENTS: "Deployment", STATEFULSETS: "StatefulSet", DAEMONSETS: "DaemonSet"}
CONTROLLER_DELAY = 0.3
DAEMONSET_NODES = 2


def Refused(status: int, reason: str, message: str) -> KubernetesError:  # noqa: N802
    """An API error with the status and message a real API server sends."""
    return KubernetesError(status=status, reason=reason, message=message)


class ClusterEmulator(kmock.KubernetesEmulator):
    """kmock plus dry-run, generation, server-side apply, logs and controllers (module doc)."""

    logs: dict[tuple[str, str, str, bool], str]

    async def _handle(self, request: Any) -> Any:
        if not hasattr(self, "logs"):
            self.logs = {}
        if request.resource == PODS and request.subresource == "log":
            return await self._serve_log(request)
        if request.resource == EVENTS and request.params.get("fieldSelector"):
            return await self._serve_events(request)
        if request.action == kmock.action.UPDATE and request.resource in WORKLOADS:
            return await self._update_workload(request)
        if request.action == kmock.action.CREATE and request.resource in WORKLOADS:
            if isinstance(request.data, dict):
                request.data.setdefault("metadata", {}).setdefault("generation", 1)
        return await super()._handle(request)

    async def _update_workload(self, request: Any) -> Any:
        key = (request.resource, request.namespace, request.name)
        obj = self.objects[key] if key in self.objects else None
        before = copy.deepcopy(obj.raw) if obj is not None and not obj.deleted else None
        dry_run = request.params.get("dryRun") == "All"
        if before is not None and isinstance(request.data, dict):
            annotations = before.get("metadata", {}).get("annotations") or {}
            if dry_run and annotations.get("shipdeck.test/webhook") == "refuse-dry-run":
                raise Refused(
                    400,
                    "BadRequest",
                    'admission webhook "policy.example.com" does not support dry run',
                )
            if "apply-patch" in request.headers.get("Content-Type", ""):
                patch = self._server_side_apply(before, request)
                request.data.clear()  # the request is frozen; its body dict is not
                request.data.update(patch)
            # The API server bumps generation on every change to spec.
            spec = ssa_merge(before.get("spec", {}), request.data.get("spec", {}))
            spec = {k: v for k, v in spec.items() if v is not None}
            if "spec" in request.data and spec != before.get("spec"):
                generation = before.get("metadata", {}).get("generation", 1) + 1
                request.data.setdefault("metadata", {})["generation"] = generation
        response = await super()._handle(request)
        if dry_run and before is not None:
            # kmock persisted the dry-run patch: forget it, as a real dry run never stored it.
            async with self._lock:
                self.objects[key].history.pop()
        return response

    def _server_side_apply(self, before: dict[str, Any], request: Any) -> dict[str, Any]:
        """The merge patch a server-side apply amounts to, with managedFields; 409 on conflict."""
        manager = request.params.get("fieldManager", "unknown")
        force = request.params.get("force") == "true"
        body = request.data
        applied = dict(leaves(body.get("spec", {}), ("f:spec",)))
        managed = copy.deepcopy(before.get("metadata", {}).get("managedFields") or [])
        ours = next(
            (e for e in managed if e.get("manager") == manager and e.get("operation") == "Apply"),
            None,
        )
        others = [e for e in managed if e is not ours]
        conflicts = [
            (entry["manager"], path)
            for entry in others
            for path in sorted(owned_paths(entry.get("fieldsV1") or {}))
            if path in applied and value_at(before, path) != applied[path]
        ]
        if conflicts and not force:
            listed = "\n".join(
                f'- conflict with "{who}" using apps/v1: '
                + "".join(f".{p[2:]}" if p.startswith("f:") else f"[{p[2:]}]" for p in path)
                for who, path in conflicts
            )
            raise Refused(
                409, "Conflict", f"Apply failed with {len(conflicts)} conflict(s):\n{listed}"
            )
        for entry in others:
            kept = owned_paths(entry.get("fieldsV1") or {}) - set(applied) if force else None
            if kept is not None:
                entry["fieldsV1"] = fields_of(kept)
        spec = ssa_merge(before.get("spec", {}), body.get("spec", {}))
        still_owned = set().union(*(owned_paths(e.get("fieldsV1") or {}) for e in others))
        dropped = owned_paths((ours or {}).get("fieldsV1") or {}) - set(applied) - still_owned
        for path in dropped:  # a plain field nobody applies any more is removed
            if len(path) == 2 and all(p.startswith("f:") for p in path):
                spec[path[1][2:]] = None
        entry = {
            "manager": manager,
            "operation": "Apply",
            "apiVersion": "apps/v1",
            "fieldsType": "FieldsV1",
            "fieldsV1": fields_of(set(applied)),
        }
        return {
            "metadata": {"managedFields": [*others, entry]},
            "spec": spec,
        }

    async def _serve_log(self, request: Any) -> Any:
        async with self._lock:
            key = (PODS, request.namespace, request.name)
            if key not in self.objects or self.objects[key].deleted:
                raise Refused(404, "NotFound", f'pods "{request.name}" not found')
            pod = copy.deepcopy(self.objects[key].raw)
        names = [c["name"] for c in pod["spec"]["containers"]]
        container = request.params.get("container")
        if not container:
            if len(names) > 1:
                raise Refused(
                    400,
                    "BadRequest",
                    f"a container name must be specified for pod {request.name}, "
                    f"choose one of: [{' '.join(names)}]",
                )
            container = names[0]
        previous = request.params.get("previous") == "true"
        text = self.logs.get((request.namespace, request.name, container, previous))
        if text is None and previous:
            raise Refused(
                400,
                "BadRequest",
                f'previous terminated container "{container}" in pod "{request.name}" not found',
            )
        return aiohttp.web.Response(text=text or "")

    async def _serve_events(self, request: Any) -> Any:
        wanted = dict(
            part.split("=", 1) for part in request.params["fieldSelector"].split(",") if part
        )
        async with self._lock:
            items = [
                copy.deepcopy(obj.raw)
                for (resource, namespace, _), obj in self.objects.items()
                if resource == EVENTS and namespace == request.namespace and not obj.deleted
            ]
        chosen = [
            item
            for item in items
            if all(
                str(item.get("involvedObject", {}).get(field.split(".", 1)[1])) == value
                for field, value in wanted.items()
            )
        ]
        return aiohttp.web.json_response({"kind": "EventList", "items": chosen})

    async def run_controller(self, stop: asyncio.Event) -> None:
        """Finish rollouts the way the workload controllers report them in status."""
        if not hasattr(self, "logs"):
            self.logs = {}
        while not stop.is_set():
            await asyncio.sleep(CONTROLLER_DELAY)
            async with self._lock:
                for (resource, namespace, name), obj in list(self.objects.items()):
                    if resource in WORKLOADS and not obj.deleted:
                        self._reconcile(WORKLOADS[resource], namespace or "default", name, obj)

    def _reconcile(self, kind: str, namespace: str, name: str, obj: Any) -> None:
        generation = obj.get("metadata", {}).get("generation", 1)
        status = obj.get("status") or {}
        if status.get("observedGeneration") == generation:
            return
        spec = obj["spec"]
        replicas = DAEMONSET_NODES if kind == "DaemonSet" else spec.get("replicas", 1)
        containers = spec["template"]["spec"]["containers"]
        images = " ".join(c.get("image", "") for c in containers)
        broken, surge = "broken" in images, "surge" in images
        self._pods(namespace, name, obj, generation, replicas, broken)
        ready = 0 if broken else replicas
        if kind == "Deployment":
            obj["status"] = {
                "observedGeneration": generation,
                "replicas": replicas + 1 if surge else replicas,
                "updatedReplicas": replicas,
                "readyReplicas": ready,
                "availableReplicas": ready,
                "conditions": [
                    {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}
                    if surge
                    else {
                        "type": "Progressing",
                        "status": "False",
                        "reason": "ProgressDeadlineExceeded",
                        "message": f'ReplicaSet "{name}-7d9f" has timed out progressing.',
                    }
                    if broken
                    else {
                        "type": "Progressing",
                        "status": "True",
                        "reason": "NewReplicaSetAvailable",
                    }
                ],
            }
        elif kind == "StatefulSet":
            revision = f"{name}-{generation}"
            obj["status"] = {
                "observedGeneration": generation,
                "replicas": replicas,
                "readyReplicas": ready,
                "currentReplicas": ready,
                "updatedReplicas": replicas,
                "currentRevision": revision if not broken else f"{name}-{generation - 1}",
                "updateRevision": revision,
            }
        else:
            obj["status"] = {
                "observedGeneration": generation,
                "desiredNumberScheduled": replicas,
                "currentNumberScheduled": replicas,
                "updatedNumberScheduled": replicas,
                "numberReady": ready,
                "numberAvailable": ready,
            }

    def _pods(
        self, namespace: str, name: str, obj: Any, generation: int, replicas: int, broken: bool
    ) -> None:
        """Pods of the current generation (older ones gone), their logs and crash events."""
        for key in [k for k in self.objects if k[0] == PODS and k[1] == namespace]:
            if key[2].startswith(f"{name}-g") and not key[2].startswith(f"{name}-g{generation}-"):
                self.objects[key].delete()
        template = obj["spec"]["template"]
        labels = dict(template.get("metadata", {}).get("labels") or {})
        containers = template["spec"]["containers"]
        for index in range(replicas):
            pod_name = f"{name}-g{generation}-{index}"
            self.objects[PODS, namespace, pod_name] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod_name, "namespace": namespace, "labels": labels},
                "spec": {"containers": copy.deepcopy(containers)},
                "status": {
                    "containerStatuses": [
                        {
                            "name": c["name"],
                            "image": c.get("image"),
                            "ready": not broken,
                            "restartCount": 2 if broken else 0,
                        }
                        for c in containers
                    ]
                },
            }
            for c in containers:
                self.logs[namespace, pod_name, c["name"], False] = (
                    f"{c['name']} starting {c.get('image')}\n"
                    if broken
                    else f"{c['name']} {c.get('image')} up on {pod_name}\n"
                )
                if broken:
                    self.logs[namespace, pod_name, c["name"], True] = (
                        f"fatal: {c['name']} cannot open queue\n"
                    )
            if broken and index == 0:
                # Stored out of time order, as an events list comes back from a real server.
                stamps = [("BackOff", "12"), ("Scheduled", "10"), ("Pulled", "11")]
                for reason, second in stamps:
                    event_name = f"{pod_name}.{reason.lower()}"
                    self.objects[EVENTS, namespace, event_name] = {
                        "apiVersion": "v1",
                        "kind": "Event",
                        "metadata": {"name": event_name, "namespace": namespace},
                        "involvedObject": {"kind": "Pod", "name": pod_name},
                        "reason": reason,
                        "type": "Warning" if reason == "BackOff" else "Normal",
                        "lastTimestamp": f"2026-11-26T10:00:{second}Z",
                        "message": (
                            f"Back-off restarting failed container {containers[0]['name']}"
                            if reason == "BackOff"
                            else f"{reason} {pod_name}"
                        ),
                    }


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

    def get(self, resource: Any, namespace: str, name: str) -> dict[str, Any]:
        """A stored object, as the API server would return it."""

        async def read() -> dict[str, Any]:
            async with self.emulator._lock:
                return copy.deepcopy(self.emulator.objects[resource, namespace, name].raw)

        result: dict[str, Any] = self.call(read())
        return result

    def put(self, resource: Any, namespace: str, name: str, obj: dict[str, Any]) -> None:
        """Store an object as another client (an HPA, a Helm-owned workload) would have."""

        async def write() -> None:
            async with self.emulator._lock:
                self.emulator.objects[resource, namespace, name] = copy.deepcopy(obj)

        self.call(write())

    def deployment(self, namespace: str, name: str) -> dict[str, Any]:
        """A stored Deployment."""
        return self.get(DEPLOYMENTS, namespace, name)


def deployment_manifest(
    name: str,
    image: str,
    replicas: int = 1,
    *,
    kind: str = "Deployment",
    sidecar: str | None = None,
    container_name: str | None = None,
    **env: str,
) -> dict[str, Any]:
    """A schema-complete workload with a container named after the service (sidecar first)."""
    container: dict[str, Any] = {"name": container_name or name, "image": image}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    containers = [container]
    if sidecar is not None:
        containers.insert(0, {"name": sidecar, "image": f"demo/{sidecar}:1"})
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": containers},
        },
    }
    if kind != "DaemonSet":
        spec["replicas"] = replicas
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": spec,
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
            emulator.logs = {}
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
    kubeconfig.write_text(yaml.safe_dump(kubeconfig_for(holder["url"])))
    try:
        yield Cluster(holder["url"], kubeconfig, holder["emulator"], loop)
    finally:
        loop.call_soon_threadsafe(holder["stop"].set)
        thread.join(timeout=10)


def kubeconfig_for(url: str, user: dict[str, Any] | None = None) -> dict[str, Any]:
    """A kubeconfig for a server URL (a static token unless `user` says otherwise)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kmock", "cluster": {"server": url}}],
        "users": [{"name": "tester", "user": user or {"token": "test-token"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "tester"}}],
        "current-context": "kmock",
    }


def apps_api(kubeconfig: str | Path) -> Any:
    """An AppsV1Api from a kubeconfig; typed loosely because tests pass plain manifests."""
    from kubernetes import client, config

    return client.AppsV1Api(config.new_client_from_config(config_file=str(kubeconfig)))  # type: ignore[no-untyped-call]
