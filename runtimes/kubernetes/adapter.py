"""The Kubernetes runtime, through the official kubernetes client.

Each service is a Deployment, StatefulSet or DaemonSet of the same name in the target's
namespace. Preview asks the API server for a non-forced server-side dry-run apply of only the
fields the release changes (plus those shipdeck already owns) and diffs the live object
against the result; apply is the same request for real, then a rollout wait with the
conditions of `kubectl rollout status`.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from kubernetes import client
from pydantic import ValidationError

from runtimes.base import (
    ApplyResult,
    Diagnosis,
    LiveState,
    Plan,
    Progress,
    RiskHint,
    RuntimeAdapter,
    RuntimeRefused,
    RuntimeUnavailable,
    ServiceChange,
    ServiceDiagnosis,
    ServiceSpec,
    ServiceState,
    TargetRef,
    connection_of,
    desired_spec,
    diff_specs,
    make_plan,
)
from runtimes.kubernetes.api import ClientCache, Session, api_reason, not_found
from runtimes.kubernetes.connection import KubeConnection
from runtimes.kubernetes.workloads import (
    FIELD_MANAGER,
    KINDS,
    Kind,
    apply_body,
    event_time,
    pick_container,
    progress_deadline,
    rollout_status,
    selector_matches,
    spec_of,
)

POLL_SECONDS = 0.25
HEARTBEAT_SECONDS = 15.0
LOG_LINES = 20
MAX_PODS = 10
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"


def _json(response: object) -> dict[str, Any]:
    """The body of a call made with `_preload_content=False` (plain JSON, not client models)."""
    result: dict[str, Any] = json.loads(response.data)  # type: ignore[attr-defined]
    return result


def _deadline_grace(seconds: int) -> float:
    # The controller marks ProgressDeadlineExceeded a resync after the deadline passes.
    return min(30.0, max(2.0, seconds * 0.2))


class KubernetesAdapter(RuntimeAdapter):
    """Kubernetes targets: kubeconfig (or in-cluster) + optional context + namespace."""

    name = "kubernetes"
    connection_model = KubeConnection

    def __init__(self) -> None:
        self._clients = ClientCache()

    def _session(self, target: TargetRef) -> Session:
        try:
            connection = connection_of(KubeConnection, target.connection)
        except ValidationError as exc:
            problems = "; ".join(str(e["msg"]) for e in exc.errors())
            raise RuntimeRefused(f"the target's connection is invalid: {problems}") from exc
        return self._clients.session(connection)

    # ------------------------------------------------------------------ objects

    def _read(self, session: Session, service: str) -> tuple[Kind, dict[str, Any]] | None:
        """The service's workload: the declared kind, else the first kind that exists."""
        declared = session.connection.kinds.get(service)
        kinds = [KINDS[declared]] if declared else list(KINDS.values())
        apps = client.AppsV1Api(session.api)
        for kind in kinds:
            read = getattr(apps, f"read_namespaced_{kind.suffix}")
            try:
                response = read(service, session.namespace, _preload_content=False)
            except client.ApiException as exc:
                if not_found(exc):
                    continue
                raise
            return kind, _json(response)
        return None

    def _patch(
        self, session: Session, kind: Kind, body: dict[str, Any], *, dry_run: bool
    ) -> dict[str, Any]:
        patch = getattr(client.AppsV1Api(session.api), f"patch_namespaced_{kind.suffix}")
        response = patch(
            body["metadata"]["name"],
            session.namespace,
            body,
            dry_run="All" if dry_run else None,
            field_manager=FIELD_MANAGER,
            force=session.connection.force_conflicts,
            _content_type=APPLY_CONTENT_TYPE,
            _preload_content=False,
        )
        return _json(response)

    def _hpa_for(
        self, session: Session, kind: Kind, service: str, *, strict: bool = True
    ) -> str | None:
        """The HorizontalPodAutoscaler scaling this workload, if one does.

        `strict`: when we may not list autoscalers, refuse (a replicas change must know);
        otherwise assume none (sending the replicas we already own changes nothing).
        """
        api = client.AutoscalingV2Api(session.api)
        try:
            response = api.list_namespaced_horizontal_pod_autoscaler(
                session.namespace, _preload_content=False
            )
        except client.ApiException as exc:
            if not_found(exc):
                return None
            if exc.status == 403 and not strict:
                return None
            if exc.status == 403:
                raise RuntimeRefused(
                    f"{service}: cannot tell whether an autoscaler sets its replicas (listing "
                    "horizontalpodautoscalers is forbidden); grant list on them to change replicas"
                ) from exc
            raise
        for hpa in _json(response).get("items", []):
            ref = hpa.get("spec", {}).get("scaleTargetRef", {})
            if ref.get("kind") == kind.name and ref.get("name") == service:
                return str(hpa.get("metadata", {}).get("name"))
        return None

    # ------------------------------------------------------------------ reading

    def describe(self, target: TargetRef) -> LiveState:
        """Read each service's workload: image, replicas, env and rollout health."""
        services: dict[str, ServiceState] = {}
        with self._session(target) as session:
            for name in target.services:
                found = self._read(session, name)
                if found is None:
                    services[name] = ServiceState(image=None, replicas=0, health="absent")
                    continue
                kind, obj = found
                health, _ = rollout_status(kind, obj)
                try:
                    container = pick_container(obj, name, session.connection.containers.get(name))
                except RuntimeRefused:
                    # Which container is the service's is unknown until declared: say so by
                    # showing no image, rather than the image of a guessed sidecar.
                    container = {}
                spec = spec_of(kind, obj, container)
                status = obj.get("status") or {}
                running = status.get("availableReplicas", status.get("numberAvailable", 0))
                services[name] = ServiceState(**spec.model_dump(), health=health, running=running)
        return LiveState(services=services)

    def fingerprint(self, target: TargetRef, services: list[str]) -> str:
        """SHA-256 over the kind and the whole `spec` the API server returns for each service."""
        with self._session(target) as session:
            objects = {name: self._read(session, name) for name in services}
        return _fingerprint(objects)

    def plan(self, target: TargetRef, changes: dict[str, ServiceChange]) -> Plan:
        """A non-forced server-side dry-run apply per service; diff live against its result."""
        hints: list[RiskHint] = []
        with self._session(target) as session:
            objects = {name: self._read(session, name) for name in changes}
            missing = [name for name, found in objects.items() if found is None]
            if missing:
                raise RuntimeRefused(
                    f"no Deployment, StatefulSet or DaemonSet named {', '.join(missing)} "
                    f"in namespace {session.namespace}"
                )
            live: dict[str, ServiceState] = {}
            desired: dict[str, ServiceSpec] = {}
            for name, change in changes.items():
                kind, obj = objects[name]  # type: ignore[misc]
                container = pick_container(obj, name, session.connection.containers.get(name))
                current = spec_of(kind, obj, container)
                live[name] = ServiceState(**current.model_dump())
                wanted = desired_spec(current, change)
                if change.replicas is not None and not kind.scalable:
                    raise RuntimeRefused(
                        f"{name} is a DaemonSet: it runs one pod per node, no replicas"
                    )
                if wanted.replicas != current.replicas:
                    self._check_hpa(session, kind, name)
                body = apply_body(
                    kind, obj, container["name"], current, wanted, replicas_allowed=True
                )
                desired[name], hint = self._dry_run(
                    session, kind, name, container["name"], body, wanted
                )
                if hint is not None:
                    hints.append(hint)
            base = _fingerprint(objects)
        plan = make_plan(target, LiveState(services=live), desired, base_fingerprint=base)
        plan.risk_hints = hints + plan.risk_hints
        return plan

    def _check_hpa(self, session: Session, kind: Kind, name: str) -> None:
        hpa = self._hpa_for(session, kind, name)
        if hpa is not None:
            raise RuntimeRefused(
                f"{name}: HorizontalPodAutoscaler {hpa} sets its replicas; change the "
                "autoscaler's bounds instead of the replicas"
            )

    def _dry_run(
        self,
        session: Session,
        kind: Kind,
        name: str,
        container: str,
        body: dict[str, Any],
        wanted: ServiceSpec,
    ) -> tuple[ServiceSpec, RiskHint | None]:
        try:
            dry = self._patch(session, kind, body, dry_run=True)
        except client.ApiException as exc:
            reason = api_reason(exc)
            if exc.status == 409:
                raise RuntimeRefused(
                    f"{name}: {reason}. Another field manager owns these fields; shipdeck does "
                    "not take them over unless the target declares force_conflicts: true"
                ) from exc
            if exc.status in (400, 403, 500) and _dry_run_refused(reason):
                # An admission webhook without sideEffects None refuses every dry run: the
                # diff can only be computed here, and the preview must say so.
                return wanted, RiskHint(
                    level="medium",
                    message=f"{name}: CLIENT-SIDE DIFF, the API server refused the dry run "
                    f"({reason}); admission webhooks and defaults were not applied to it",
                )
            raise
        return spec_of(kind, dry, pick_container(dry, name, container)), None

    # ------------------------------------------------------------------ applying

    def apply(self, plan: Plan, progress: Progress) -> ApplyResult:
        """Server-side apply the changed fields of each workload, then wait for every rollout."""
        try:
            with self._session(plan.target) as session:
                generations: dict[str, tuple[Kind, int, float]] = {}
                for name, spec in plan.desired.items():
                    found = self._read(session, name)
                    if found is None:
                        raise RuntimeRefused(f"{name} disappeared from {session.namespace}")
                    kind, obj = found
                    container = pick_container(obj, name, session.connection.containers.get(name))
                    current = spec_of(kind, obj, container)
                    changed = ", ".join(diff_specs(current, spec)) or "nothing"
                    progress(name, "info", f"server-side apply of {kind.name} {name}: {changed}")
                    body = apply_body(
                        kind,
                        obj,
                        container["name"],
                        current,
                        spec,
                        replicas_allowed=spec.replicas != current.replicas
                        or self._hpa_for(session, kind, name, strict=False) is None,
                    )
                    try:
                        applied = self._patch(session, kind, body, dry_run=False)
                    except client.ApiException as exc:
                        if exc.status == 409:
                            raise RuntimeRefused(f"{name}: {api_reason(exc)}") from exc
                        raise
                    deadline = float(progress_deadline(applied))
                    generations[name] = (
                        kind,
                        applied.get("metadata", {}).get("generation", 0),
                        deadline + _deadline_grace(int(deadline)),
                    )
                return self._wait(session, plan, generations, progress)
        except (RuntimeRefused, RuntimeUnavailable) as exc:
            progress(None, "error", str(exc))
            return ApplyResult(ok=False, reason=str(exc))

    def _wait(
        self,
        session: Session,
        plan: Plan,
        generations: dict[str, tuple[Kind, int, float]],
        progress: Progress,
    ) -> ApplyResult:
        cap = session.connection.timeout_seconds
        longest = max(limit for _, _, limit in generations.values())
        timeout = min(cap, longest) if cap else longest
        deadline = time.monotonic() + timeout
        heartbeat = time.monotonic() + HEARTBEAT_SECONDS
        pending = set(plan.desired)
        seen: dict[str, str] = {}
        while pending:
            for name in sorted(pending):
                found = self._read(session, name)
                if found is None:
                    return self._failed(session, name, f"{name} was deleted", progress)
                kind, obj = found
                observed = (obj.get("status") or {}).get("observedGeneration", 0)
                health, why = rollout_status(kind, obj)
                if observed < generations[name][1]:
                    health, why = "starting", "waiting for the controller"
                if health == "unhealthy":
                    return self._failed(session, name, f"{name}: {why}", progress)
                if why != seen.get(name):
                    seen[name] = why
                    progress(name, "info", why)
                if health == "healthy":
                    pending.discard(name)
            if not pending:
                break
            now = time.monotonic()
            if now > deadline:
                names = ", ".join(sorted(pending))
                name = sorted(pending)[0]
                reason = (
                    f"rollout of {names} did not finish within {timeout:.0f}s "
                    f"({seen.get(name, 'no progress reported')})"
                )
                return self._failed(session, name, reason, progress)
            if now > heartbeat:  # also renews the apply lease
                progress(None, "info", f"waiting for the rollout of {', '.join(sorted(pending))}")
                heartbeat = now + HEARTBEAT_SECONDS
            time.sleep(POLL_SECONDS)
        return ApplyResult(ok=True, applied=plan.desired)

    def _failed(
        self, session: Session, service: str, reason: str, progress: Progress
    ) -> ApplyResult:
        progress(service, "error", reason)
        found = self._read(session, service)
        if found is not None:
            for line in self._events(session, found[1], self._pods(session, found[1]))[-LOG_LINES:]:
                progress(service, "event", line)
        return ApplyResult(ok=False, reason=reason)

    # ------------------------------------------------------------------ diagnosing

    def _pods(self, session: Session, obj: dict[str, Any]) -> list[dict[str, Any]]:
        """The workload's pods, the troubled ones first, at most MAX_PODS."""
        labels = (obj["spec"].get("selector") or {}).get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        response = client.CoreV1Api(session.api).list_namespaced_pod(
            session.namespace, label_selector=selector, _preload_content=False
        )
        pods = [p for p in _json(response).get("items", []) if selector_matches(obj, p)]

        def trouble(pod: dict[str, Any]) -> tuple[int, str]:
            statuses = (pod.get("status") or {}).get("containerStatuses") or []
            restarts = sum(int(s.get("restartCount", 0)) for s in statuses)
            ready = all(s.get("ready") for s in statuses) and bool(statuses)
            return (0 if not ready else 1, f"{-restarts:09d}{pod['metadata']['name']}")

        return sorted(pods, key=trouble)[:MAX_PODS]

    def _events(
        self, session: Session, obj: dict[str, Any], pods: list[dict[str, Any]]
    ) -> list[str]:
        """Events about the workload and its pods (field selector per object), oldest first."""
        core = client.CoreV1Api(session.api)
        involved = [(obj.get("kind", ""), obj["metadata"]["name"])]
        involved += [("Pod", p["metadata"]["name"]) for p in pods]
        events: list[dict[str, Any]] = []
        for kind, name in involved:
            selector = f"involvedObject.kind={kind},involvedObject.name={name}"
            response = core.list_namespaced_event(
                session.namespace, field_selector=selector, _preload_content=False
            )
            for item in _json(response).get("items", []):
                about = item.get("involvedObject", {})
                if about.get("name") == name and about.get("kind", kind) == kind:
                    events.append(item)
        events.sort(key=event_time)
        return [
            f"{e.get('type', '')} {e.get('reason', '')} {e['involvedObject'].get('name', '')}: "
            f"{e.get('message', '')}"
            for e in events
        ]

    def diagnose(self, target: TargetRef, service: str | None = None) -> Diagnosis:
        """Rollout health, conditions and events, and recent pod logs of each service."""
        names = [service] if service else target.services
        result: dict[str, ServiceDiagnosis] = {}
        with self._session(target) as session:
            for name in names:
                found = self._read(session, name)
                if found is None:
                    result[name] = ServiceDiagnosis(health="absent")
                    continue
                kind, obj = found
                health, why = rollout_status(kind, obj)
                events = [f"rollout: {why}"]
                events += [
                    f"condition {c.get('type')}={c.get('status')} {c.get('reason', '')}: "
                    f"{c.get('message', '')}".rstrip(": ")
                    for c in (obj.get("status") or {}).get("conditions") or []
                ]
                pods = self._pods(session, obj)
                events += self._events(session, obj, pods)
                try:
                    declared = session.connection.containers.get(name)
                    container = str(pick_container(obj, name, declared)["name"])
                except RuntimeRefused as exc:
                    events.append(str(exc))
                    container = None
                logs = self._logs(session, pods, container)
                result[name] = ServiceDiagnosis(health=health, logs=logs, events=events)
        return Diagnosis(services=result)

    def _logs(
        self, session: Session, pods: list[dict[str, Any]], container: str | None
    ) -> list[str]:
        """The service container's last lines per pod, and the crashed run's for restarts."""
        core = client.CoreV1Api(session.api)
        lines: list[str] = []
        for pod in pods:
            pod_name = pod["metadata"]["name"]
            statuses = (pod.get("status") or {}).get("containerStatuses") or []
            names = [container] if container else [s.get("name") for s in statuses]
            for name in names:
                state: dict[str, Any] = next((s for s in statuses if s.get("name") == name), {})
                runs = [False]
                if int(state.get("restartCount", 0)) > 0:
                    runs.insert(0, True)  # the crashed run says why it crashed
                for previous in runs:
                    try:
                        raw = core.read_namespaced_pod_log(
                            pod_name,
                            session.namespace,
                            container=name,
                            previous=previous,
                            tail_lines=LOG_LINES,
                            _preload_content=False,
                        )
                    except client.ApiException as exc:
                        lines.append(f"{pod_name}/{name}: logs unavailable ({api_reason(exc)})")
                        continue
                    label = f"{pod_name}/{name}{' (previous run)' if previous else ''}"
                    text = raw.data.decode(errors="replace")  # type: ignore[attr-defined]
                    lines += [f"{label}: {line}" for line in text.splitlines()]
        return lines


def _dry_run_refused(reason: str) -> bool:
    text = reason.lower()
    return "dry run" in text or "dryrun" in text or "dry-run" in text


def _fingerprint(objects: dict[str, tuple[Kind, dict[str, Any]] | None]) -> str:
    payload = {
        name: None if found is None else {"kind": found[0].name, "spec": found[1].get("spec")}
        for name, found in sorted(objects.items())
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
