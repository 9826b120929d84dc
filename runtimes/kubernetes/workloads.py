"""Reading workload objects as plain JSON: container choice, specs, rollout status, apply bodies.

Pure functions over the objects the API server returns, so each rule sits in one place and
reads like the Kubernetes behaviour it copies (kubectl's rollout status, server-side apply's
field ownership).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from runtimes.base import RuntimeRefused, ServiceSpec

FIELD_MANAGER = "shipdeck"
DEFAULT_PROGRESS_DEADLINE = 600
Rollout = Literal["healthy", "starting", "unhealthy"]


@dataclass(frozen=True)
class Kind:
    """A workload kind and how the client names its calls."""

    name: str
    suffix: str  # read_namespaced_<suffix>, patch_namespaced_<suffix>
    scalable: bool


KINDS: dict[str, Kind] = {
    "Deployment": Kind("Deployment", "deployment", scalable=True),
    "StatefulSet": Kind("StatefulSet", "stateful_set", scalable=True),
    "DaemonSet": Kind("DaemonSet", "daemon_set", scalable=False),
}


def containers_of(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod template's (regular) containers."""
    containers: list[dict[str, Any]] = obj["spec"]["template"]["spec"].get("containers") or []
    return containers


def pick_container(obj: dict[str, Any], service: str, declared: str | None) -> dict[str, Any]:
    """The container a release changes: the declared one, or the only unambiguous one.

    Unambiguous means the pod has one container, or exactly one is named after the service.
    Anything else is refused with the list of containers, never guessed (a sidecar listed
    first must not be re-imaged).
    """
    containers = containers_of(obj)
    names = [str(c.get("name")) for c in containers]
    if declared is not None:
        for container in containers:
            if container.get("name") == declared:
                return container
        raise RuntimeRefused(
            f"{service}: the pods have no container {declared!r} (containers: {', '.join(names)})"
        )
    if len(containers) == 1:
        return containers[0]
    named = [c for c in containers if c.get("name") == service]
    if len(named) == 1:
        return named[0]
    raise RuntimeRefused(
        f"{service}: the pods run {len(containers)} containers ({', '.join(names)}) and none "
        f"is named {service!r}; declare which one to change (containers: {{{service}: NAME}})"
    )


def replicas_of(kind: Kind, obj: dict[str, Any]) -> int:
    """Desired replicas: spec.replicas (default 1); a DaemonSet's desired pod count."""
    if not kind.scalable:
        return int((obj.get("status") or {}).get("desiredNumberScheduled", 0))
    return int(obj["spec"].get("replicas", 1))


def spec_of(kind: Kind, obj: dict[str, Any], container: dict[str, Any]) -> ServiceSpec:
    """The deployable spec of one workload's chosen container."""
    env = {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}
    return ServiceSpec(image=container.get("image"), replicas=replicas_of(kind, obj), env=env)


def progress_deadline(obj: dict[str, Any]) -> int:
    """A Deployment's progressDeadlineSeconds (600 when unset, as the API server defaults)."""
    return int(obj["spec"].get("progressDeadlineSeconds") or DEFAULT_PROGRESS_DEADLINE)


def rollout_status(kind: Kind, obj: dict[str, Any]) -> tuple[Rollout, str]:
    """('healthy' | 'starting' | 'unhealthy', why): the conditions `kubectl rollout status` uses."""
    status = obj.get("status") or {}
    spec = obj["spec"]
    generation = obj.get("metadata", {}).get("generation", 0)
    if status.get("observedGeneration", 0) < generation:
        return "starting", "waiting for the controller to observe the new generation"
    if kind.name == "Deployment":
        for condition in status.get("conditions") or []:
            if (
                condition.get("type") == "Progressing"
                and condition.get("reason") == "ProgressDeadlineExceeded"
            ):
                return "unhealthy", f"ProgressDeadlineExceeded: {condition.get('message', '')}"
        wanted = spec.get("replicas", 1)
        updated = status.get("updatedReplicas", 0)
        if updated < wanted:
            return "starting", f"{updated} of {wanted} new replicas updated"
        if status.get("replicas", 0) > updated:
            old = status.get("replicas", 0) - updated
            return "starting", f"{old} old replicas pending termination"
        if status.get("availableReplicas", 0) < updated:
            return "starting", f"{status.get('availableReplicas', 0)} of {updated} available"
        return "healthy", "rollout complete"
    if kind.name == "StatefulSet":
        strategy = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate")
        if strategy != "RollingUpdate":
            return "healthy", f"updateStrategy {strategy}: pods update when deleted"
        wanted = spec.get("replicas", 1)
        ready = status.get("readyReplicas", 0)
        if ready < wanted:
            return "starting", f"{ready} of {wanted} pods ready"
        partition = ((spec.get("updateStrategy") or {}).get("rollingUpdate") or {}).get("partition")
        if partition:
            updated = status.get("updatedReplicas", 0)
            if updated < wanted - partition:
                return "starting", f"{updated} of {wanted - partition} partitioned pods updated"
            return "healthy", "partitioned rollout complete"
        if status.get("updateRevision") != status.get("currentRevision"):
            return "starting", f"{status.get('updatedReplicas', 0)} of {wanted} pods updated"
        return "healthy", "rollout complete"
    strategy = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate")
    if strategy != "RollingUpdate":
        return "healthy", f"updateStrategy {strategy}: pods update when deleted"
    desired = status.get("desiredNumberScheduled", 0)
    if status.get("updatedNumberScheduled", 0) < desired:
        return "starting", f"{status.get('updatedNumberScheduled', 0)} of {desired} pods updated"
    if status.get("numberAvailable", 0) < desired:
        return "starting", f"{status.get('numberAvailable', 0)} of {desired} pods available"
    return "healthy", "rollout complete"


def owned_by_us(obj: dict[str, Any]) -> dict[str, Any]:
    """The fieldsV1 set shipdeck's server-side applies own on this object ({} when none)."""
    for entry in obj.get("metadata", {}).get("managedFields") or []:
        if entry.get("manager") == FIELD_MANAGER and entry.get("operation") == "Apply":
            fields: dict[str, Any] = entry.get("fieldsV1") or {}
            return fields
    return {}


def _keyed(name: str) -> str:
    return "k:" + json.dumps({"name": name}, separators=(",", ":"))


def apply_body(
    kind: Kind,
    obj: dict[str, Any],
    container: str,
    live: ServiceSpec,
    desired: ServiceSpec,
    *,
    replicas_allowed: bool,
) -> dict[str, Any]:
    """The server-side apply body: the fields this release changes plus those shipdeck owns.

    Server-side apply removes a field its manager stops sending, so the fields an earlier
    release of ours set (and still owns) are sent again with their live values; fields we
    never touched are never sent, so another manager's (Helm's, an HPA's) stay theirs.
    """
    owned = owned_by_us(obj)
    spec_owned = owned.get("f:spec", {})
    item_owned = (
        spec_owned.get("f:template", {})
        .get("f:spec", {})
        .get("f:containers", {})
        .get(_keyed(container), {})
    )
    env_owned = item_owned.get("f:env", {})
    spec: dict[str, Any] = {}
    if (
        kind.scalable
        and replicas_allowed
        and (desired.replicas != live.replicas or "f:replicas" in spec_owned)
    ):
        spec["replicas"] = desired.replicas
    entry: dict[str, Any] = {"name": container}
    if desired.image != live.image or "f:image" in item_owned:
        entry["image"] = desired.image
    env = [
        {"name": name, "value": value}
        for name, value in sorted(desired.env.items())
        if live.env.get(name) != value or _keyed(name) in env_owned
    ]
    if env:
        entry["env"] = env
    if len(entry) > 1:
        spec["template"] = {"spec": {"containers": [entry]}}
    metadata = obj.get("metadata", {})
    return {
        "apiVersion": obj.get("apiVersion", "apps/v1"),
        "kind": kind.name,
        "metadata": {"name": metadata.get("name"), "namespace": metadata.get("namespace")},
        "spec": spec,
    }


def selector_matches(obj: dict[str, Any], pod: dict[str, Any]) -> bool:
    """True when a pod carries every matchLabel of the workload's selector."""
    wanted = (obj["spec"].get("selector") or {}).get("matchLabels") or {}
    labels = pod.get("metadata", {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in wanted.items())


def event_time(event: dict[str, Any]) -> str:
    """When an event last happened (events carry one of several timestamps)."""
    return str(
        event.get("lastTimestamp")
        or event.get("eventTime")
        or event.get("firstTimestamp")
        or event.get("metadata", {}).get("creationTimestamp")
        or ""
    )
