"""The Kubernetes runtime, through the official kubernetes client.

Each service is a Deployment of the same name in the target's namespace (its container named
like the service, else the first one). Preview asks the API server for a server-side dry-run
apply and diffs the live object against the result; apply is a server-side apply with field
manager `shipdeck`, then a rollout wait on observedGeneration / updated / available replicas.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from runtimes.base import (
    ApplyResult,
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
    make_plan,
)

FIELD_MANAGER = "shipdeck"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
POLL_SECONDS = 0.25
HEARTBEAT_SECONDS = 15.0
LOG_LINES = 20


def _json(response: object) -> dict[str, Any]:
    """The body of a call made with `_preload_content=False` (plain JSON, not client models)."""
    result: dict[str, Any] = json.loads(cast(Any, response).data)
    return result


def _reason(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "{}")
        return str(body.get("message") or exc.reason)
    except (TypeError, ValueError):
        return str(exc.reason)


def _container(deployment: dict[str, Any], service: str) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    return next((c for c in containers if c.get("name") == service), containers[0])


def _spec_of(deployment: dict[str, Any], service: str) -> ServiceSpec:
    container = _container(deployment, service)
    env = {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}
    replicas = deployment["spec"].get("replicas", 1)
    return ServiceSpec(image=container.get("image"), replicas=replicas, env=env)


def _rollout(deployment: dict[str, Any]) -> tuple[str, str | None]:
    """('healthy' | 'starting' | 'unhealthy', why) from a Deployment's status, as kubectl."""
    status = deployment.get("status") or {}
    generation = deployment.get("metadata", {}).get("generation", 0)
    replicas = deployment["spec"].get("replicas", 1)
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("status") == "False":
            return "unhealthy", f"{condition.get('reason')}: {condition.get('message', '')}".strip()
    if status.get("observedGeneration", 0) < generation:
        return "starting", None
    updated = status.get("updatedReplicas", 0)
    available = status.get("availableReplicas", 0)
    if updated == replicas and available == replicas:
        return "healthy", None
    return "starting", None


class KubernetesAdapter(RuntimeAdapter):
    """Kubernetes targets: kubeconfig (or in-cluster) + optional context + namespace."""

    name = "kubernetes"

    @contextmanager
    def _api(self, target: TargetRef) -> Iterator[client.ApiClient]:
        kubeconfig = target.connection.get("kubeconfig") or os.environ.get("KUBECONFIG")
        context = target.connection.get("context")
        try:
            if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
                api = client.ApiClient(configuration)
            else:
                api = config.new_client_from_config(  # type: ignore[no-untyped-call]
                    config_file=kubeconfig, context=context
                )
        except (ConfigException, OSError) as exc:
            raise RuntimeUnavailable(f"cannot load the kube config: {exc}") from exc
        api.configuration.retries = 1
        try:
            yield api
        except ApiException as exc:
            if exc.status in (401, 403):
                raise RuntimeUnavailable(
                    f"the API server refused our credentials: {_reason(exc)}"
                ) from exc
            if exc.status in (400, 404, 409, 422):
                raise RuntimeRefused(_reason(exc)) from exc
            raise RuntimeUnavailable(
                f"the API server answered {exc.status}: {_reason(exc)}"
            ) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise RuntimeUnavailable(f"the API server is unreachable: {exc}") from exc
        finally:
            api.close()  # type: ignore[no-untyped-call]

    @staticmethod
    def _namespace(target: TargetRef) -> str:
        return str(target.connection["namespace"])

    @staticmethod
    def _timeout(target: TargetRef) -> float:
        return float(target.connection.get("timeout_seconds", 120))

    def _read(self, api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            response = client.AppsV1Api(api).read_namespaced_deployment(
                name, namespace, _preload_content=False
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return _json(response)

    def _apply(
        self,
        api: client.ApiClient,
        namespace: str,
        service: str,
        live: dict[str, Any],
        spec: ServiceSpec,
        *,
        dry_run: bool,
    ) -> dict[str, Any]:
        container: dict[str, Any] = {"name": _container(live, service)["name"], "image": spec.image}
        if spec.env:
            container["env"] = [{"name": k, "value": v} for k, v in sorted(spec.env.items())]
        # Only the fields shipdeck owns; the server merges containers by name.
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": service, "namespace": namespace},
            "spec": {
                "replicas": spec.replicas,
                "template": {"spec": {"containers": [container]}},
            },
        }
        response = client.AppsV1Api(api).patch_namespaced_deployment(
            service,
            namespace,
            body,
            dry_run="All" if dry_run else None,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY_CONTENT_TYPE,
            _preload_content=False,
        )
        return _json(response)

    def _events(self, api: client.ApiClient, namespace: str, service: str) -> list[str]:
        response = client.CoreV1Api(api).list_namespaced_event(namespace, _preload_content=False)
        items = _json(response).get("items", [])
        lines = []
        for item in items:
            involved = item.get("involvedObject", {}).get("name", "")
            if involved == service or involved.startswith(f"{service}-"):
                lines.append(
                    f"{item.get('type', '')} {item.get('reason', '')} {involved}: "
                    f"{item.get('message', '')}"
                )
        return lines

    # ------------------------------------------------------------------ reading

    def describe(self, target: TargetRef) -> LiveState:
        """Read each service's Deployment: image, replicas, env and rollout health."""
        namespace = self._namespace(target)
        services: dict[str, ServiceState] = {}
        with self._api(target) as api:
            for name in target.services:
                deployment = self._read(api, namespace, name)
                if deployment is None:
                    services[name] = ServiceState(image=None, replicas=0, health="absent")
                    continue
                spec = _spec_of(deployment, name)
                health, _ = _rollout(deployment)
                available = (deployment.get("status") or {}).get("availableReplicas", 0)
                services[name] = ServiceState(
                    **spec.model_dump(),
                    health=health,
                    running=available,
                )
        return LiveState(services=services)

    def plan(self, target: TargetRef, changes: dict[str, ServiceChange]) -> Plan:
        """Server-side dry-run apply of the changes; diff the live objects against the result."""
        namespace = self._namespace(target)
        with self._api(target) as api:
            live_objects: dict[str, dict[str, Any]] = {}
            for name in target.services:
                deployment = self._read(api, namespace, name)
                if deployment is not None:
                    live_objects[name] = deployment
            missing = [name for name in changes if name not in live_objects]
            if missing:
                raise RuntimeRefused(
                    f"no Deployment named {', '.join(missing)} in namespace {namespace}"
                )
            live = LiveState(
                services={
                    name: ServiceState(**_spec_of(obj, name).model_dump())
                    for name, obj in live_objects.items()
                }
            )
            desired: dict[str, ServiceSpec] = {}
            for name, change in changes.items():
                wanted = desired_spec(live.services[name], change)
                dry = self._apply(api, namespace, name, live_objects[name], wanted, dry_run=True)
                desired[name] = _spec_of(dry, name)
        return make_plan(target, live, desired)

    # ------------------------------------------------------------------ applying

    def apply(self, plan: Plan, progress: Progress) -> ApplyResult:
        """Server-side apply each changed Deployment, then wait for every rollout."""
        namespace = self._namespace(plan.target)
        try:
            with self._api(plan.target) as api:
                generations: dict[str, int] = {}
                for name, spec in plan.desired.items():
                    live = self._read(api, namespace, name)
                    if live is None:
                        raise RuntimeRefused(f"Deployment {name} disappeared from {namespace}")
                    progress(name, "info", f"server-side apply: {spec.image} x{spec.replicas}")
                    applied = self._apply(api, namespace, name, live, spec, dry_run=False)
                    generations[name] = applied.get("metadata", {}).get("generation", 0)
                return self._wait(api, plan, namespace, generations, progress)
        except (RuntimeUnavailable, RuntimeRefused) as exc:
            progress(None, "error", str(exc))
            return ApplyResult(ok=False, reason=str(exc))

    def _wait(
        self,
        api: client.ApiClient,
        plan: Plan,
        namespace: str,
        generations: dict[str, int],
        progress: Progress,
    ) -> ApplyResult:
        timeout = self._timeout(plan.target)
        deadline = time.monotonic() + timeout
        heartbeat = time.monotonic() + HEARTBEAT_SECONDS
        pending = set(plan.desired)
        seen: dict[str, tuple[int, int]] = {}
        while pending:
            for name in sorted(pending):
                deployment = self._read(api, namespace, name)
                if deployment is None:
                    return self._failed(
                        api, namespace, name, f"Deployment {name} was deleted", progress
                    )
                status = deployment.get("status") or {}
                observed = status.get("observedGeneration", 0) >= generations[name]
                health, why = _rollout(deployment)
                if observed and health == "unhealthy":
                    return self._failed(api, namespace, name, f"{name}: {why}", progress)
                counts = (status.get("updatedReplicas", 0), status.get("availableReplicas", 0))
                if observed and counts != seen.get(name):
                    seen[name] = counts
                    wanted = deployment["spec"].get("replicas", 1)
                    progress(
                        name,
                        "info",
                        f"{counts[0]}/{wanted} updated, {counts[1]}/{wanted} available",
                    )
                if observed and health == "healthy":
                    progress(name, "info", "rollout complete")
                    pending.discard(name)
            if not pending:
                break
            now = time.monotonic()
            if now > deadline:
                name = sorted(pending)[0]
                return self._failed(
                    api,
                    namespace,
                    name,
                    f"rollout of {', '.join(sorted(pending))} did not finish within {timeout:.0f}s",
                    progress,
                )
            if now > heartbeat:  # also renews the apply lease
                progress(None, "info", f"waiting for the rollout of {', '.join(sorted(pending))}")
                heartbeat = now + HEARTBEAT_SECONDS
            time.sleep(POLL_SECONDS)
        return ApplyResult(ok=True, applied=plan.desired)

    def _failed(
        self, api: client.ApiClient, namespace: str, service: str, reason: str, progress: Progress
    ) -> ApplyResult:
        progress(service, "error", reason)
        for line in self._events(api, namespace, service)[-LOG_LINES:]:
            progress(service, "event", line)
        return ApplyResult(ok=False, reason=reason)

    # ------------------------------------------------------------------ diagnosing

    def diagnose(self, target: TargetRef, service: str | None = None) -> Diagnosis:
        """Rollout health, conditions and events, and recent pod logs of each service."""
        namespace = self._namespace(target)
        names = [service] if service else target.services
        result: dict[str, ServiceDiagnosis] = {}
        with self._api(target) as api:
            for name in names:
                deployment = self._read(api, namespace, name)
                if deployment is None:
                    result[name] = ServiceDiagnosis(health="absent")
                    continue
                health, _ = _rollout(deployment)
                events = [
                    f"condition {c.get('type')}={c.get('status')} {c.get('reason', '')}: "
                    f"{c.get('message', '')}".rstrip(": ")
                    for c in (deployment.get("status") or {}).get("conditions") or []
                ]
                events += self._events(api, namespace, name)
                result[name] = ServiceDiagnosis(
                    health=health, logs=self._logs(api, namespace, deployment), events=events
                )
        return Diagnosis(services=result)

    def _logs(self, api: client.ApiClient, namespace: str, deployment: dict[str, Any]) -> list[str]:
        labels = deployment["spec"].get("selector", {}).get("matchLabels", {})
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        core = client.CoreV1Api(api)
        pods = _json(
            core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False)
        ).get("items", [])
        lines: list[str] = []
        for pod in pods[:3]:
            pod_name = pod["metadata"]["name"]
            try:
                raw = core.read_namespaced_pod_log(
                    pod_name, namespace, tail_lines=LOG_LINES, _preload_content=False
                )
                text = cast(Any, raw).data.decode(errors="replace")
            except ApiException:
                continue
            lines += [f"{pod_name}: {line}" for line in text.splitlines()]
        return lines
