"""Opt-in: the Kubernetes adapter against a real cluster (kind, k3s, any conformant one).

Runs only when SHIPDECK_TEST_KUBECONFIG names a kubeconfig. Each test works in a namespace
of its own (created and deleted here; SHIPDECK_TEST_NAMESPACE names an existing one to use
instead, whose test objects are deleted afterwards). Images: SHIPDECK_TEST_IMAGE and
SHIPDECK_TEST_IMAGE_2 (default busybox:1.36 / busybox:1.37), pullable by the cluster.

The same behaviours as tests/runtimes/test_kubernetes_cluster_rules.py, but with the real
API server's server-side apply, managedFields, dry run and controllers. Dry-run refusal by an
admission webhook needs a webhook deployed in the cluster and is proven on kmock only (see
README). No cluster can run on the CI machines, so these are the tests allowed to skip there.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from runtimes.base import RuntimeRefused, ServiceChange, TargetRef
from runtimes.kubernetes import KubernetesAdapter
from tests.support.kube import deployment_manifest

KUBECONFIG = os.environ.get("SHIPDECK_TEST_KUBECONFIG")
NAMESPACE = os.environ.get("SHIPDECK_TEST_NAMESPACE")
IMAGE = os.environ.get("SHIPDECK_TEST_IMAGE", "busybox:1.36")
IMAGE_2 = os.environ.get("SHIPDECK_TEST_IMAGE_2", "busybox:1.37")
SLEEP = ["sh", "-c", "echo up; exec sleep 3600"]

pytestmark = [
    pytest.mark.kubernetes,
    pytest.mark.skipif(
        not KUBECONFIG,
        reason="opt-in: needs a real cluster (SHIPDECK_TEST_KUBECONFIG); none runs in CI, the same "
        "rules run against kmock in test_kubernetes_cluster_rules.py",
    ),
]


@dataclass
class Real:
    """A namespace on the real cluster and clients for it."""

    namespace: str
    api: Any

    def apps(self) -> Any:
        from kubernetes import client

        return client.AppsV1Api(self.api)

    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api)

    def target(self, *services: str, **connection: Any) -> TargetRef:
        return TargetRef(
            target_id=0,
            project="smoke",
            environment="real",
            runtime="kubernetes",
            services=list(services),
            # The tests create their workloads with this client, so a real API server records
            # it as the owner (Update) of every field: a non-forced apply would report
            # conflicts with it. The targets adopt those fields unless a test says otherwise.
            connection={
                "kubeconfig": KUBECONFIG,
                "namespace": self.namespace,
                "timeout_seconds": 240,
                "force_conflicts": True,
                **connection,
            },
        )

    def create(self, manifest: dict[str, Any], command: list[str] | None = None) -> None:
        for container in manifest["spec"]["template"]["spec"]["containers"]:
            container.setdefault("command", command or SLEEP)
            if container["image"].startswith("demo/"):  # the emulator's sidecar image
                container["image"] = IMAGE
        suffix = {"Deployment": "deployment", "StatefulSet": "stateful_set"}.get(
            manifest["kind"], "daemon_set"
        )
        getattr(self.apps(), f"create_namespaced_{suffix}")(self.namespace, manifest)


@pytest.fixture
def real() -> Iterator[Real]:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(KUBECONFIG))  # type: ignore[no-untyped-call]
    core = client.CoreV1Api(api)
    namespace = NAMESPACE or f"shipdeck-test-{uuid.uuid4().hex[:8]}"
    if NAMESPACE is None:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    try:
        yield Real(namespace, api)
    finally:
        if NAMESPACE is None:
            core.delete_namespace(namespace)
        else:
            apps = client.AppsV1Api(api)
            try:
                client.AutoscalingV2Api(api).delete_namespaced_horizontal_pod_autoscaler(
                    "app", namespace
                )
            except client.ApiException:
                pass
            for name in ("app", "sts", "agent"):
                for kind in ("deployment", "stateful_set", "daemon_set"):
                    try:
                        getattr(apps, f"delete_namespaced_{kind}")(name, namespace)
                    except client.ApiException:
                        pass


def _ready(adapter: KubernetesAdapter, target: TargetRef, service: str) -> None:
    deadline = time.monotonic() + 240
    while adapter.describe(target).services[service].health != "healthy":
        assert time.monotonic() < deadline, f"{service} never became healthy"
        time.sleep(1)


def _apply(adapter: KubernetesAdapter, target: TargetRef, **changes: ServiceChange) -> Any:
    plan = adapter.plan(target, changes)
    return plan, adapter.apply(plan, lambda *line: None)


def test_rollout_waits_like_kubectl_and_fails_on_the_progress_deadline(real: Real) -> None:
    manifest = deployment_manifest("app", IMAGE, 2)
    manifest["spec"]["progressDeadlineSeconds"] = 20
    real.create(manifest)
    adapter, target = KubernetesAdapter(), real.target("app")
    _ready(adapter, target, "app")
    plan, result = _apply(adapter, target, app=ServiceChange(image=IMAGE_2, replicas=3))
    assert result.ok, result.reason
    status = real.apps().read_namespaced_deployment("app", real.namespace).status
    # Success only once no old replica is left and every updated one is available.
    assert status.replicas == status.updated_replicas == status.available_replicas == 3
    _, result = _apply(adapter, target, app=ServiceChange(image_tag="no-such-tag-shipdeck"))
    assert not result.ok and "ProgressDeadlineExceeded" in (result.reason or "")


def test_container_is_declared_or_unambiguous(real: Real) -> None:
    real.create(deployment_manifest("app", IMAGE, sidecar="envoy", container_name="main"))
    adapter = KubernetesAdapter()
    with pytest.raises(RuntimeRefused, match="envoy, main"):
        adapter.plan(real.target("app"), {"app": ServiceChange(image=IMAGE_2)})
    target = real.target("app", containers={"app": "main"})
    _ready(adapter, target, "app")
    _, result = _apply(adapter, target, app=ServiceChange(image=IMAGE_2))
    assert result.ok, result.reason
    pod_spec = real.apps().read_namespaced_deployment("app", real.namespace).spec.template.spec
    assert [(c.name, c.image) for c in pod_spec.containers] == [
        ("envoy", IMAGE),
        ("main", IMAGE_2),
    ]


def test_field_ownership_conflicts_hpa_and_kept_fields(real: Real) -> None:
    from kubernetes import client

    real.create(deployment_manifest("app", IMAGE))
    adapter, target = KubernetesAdapter(), real.target("app")
    _ready(adapter, target, "app")
    # Another manager (as Helm or Argo CD would) applies and owns spec.replicas.
    real.apps().patch_namespaced_deployment(
        "app",
        real.namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "app"},
            "spec": {"replicas": 1},
        },
        field_manager="helm",
        _content_type="application/apply-patch+yaml",
    )
    polite = real.target("app", force_conflicts=False)
    with pytest.raises(RuntimeRefused, match='conflict with "helm"'):
        adapter.plan(polite, {"app": ServiceChange(replicas=2)})
    assert real.apps().read_namespaced_deployment("app", real.namespace).spec.replicas == 1
    _, result = _apply(adapter, target, app=ServiceChange(image=IMAGE_2, replicas=2))
    assert result.ok, result.reason
    # A later release of only the image keeps the replicas shipdeck set.
    _, result = _apply(adapter, target, app=ServiceChange(image=IMAGE))
    assert result.ok, result.reason
    assert real.apps().read_namespaced_deployment("app", real.namespace).spec.replicas == 2
    autoscaling: Any = client.AutoscalingV2Api(real.api)  # plain manifests, loosely typed
    autoscaling.create_namespaced_horizontal_pod_autoscaler(
        real.namespace,
        {
            "metadata": {"name": "app"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "app"},
                "minReplicas": 2,
                "maxReplicas": 4,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 80},
                        },
                    }
                ],
            },
        },
    )
    with pytest.raises(RuntimeRefused, match="HorizontalPodAutoscaler app"):
        adapter.plan(target, {"app": ServiceChange(replicas=3)})


def test_logs_of_a_crash_looping_sidecar_pod_and_sorted_events(real: Real) -> None:
    crash = ["sh", "-c", "echo crashing now; exit 1"]
    manifest = deployment_manifest("app", IMAGE, 4, sidecar="envoy")
    manifest["spec"]["template"]["spec"]["containers"][0]["command"] = SLEEP
    real.create(manifest, command=crash)
    adapter, target = KubernetesAdapter(), real.target("app")
    deadline = time.monotonic() + 240
    while True:
        app = adapter.diagnose(target).services["app"]
        if any("(previous run): crashing now" in line for line in app.logs):
            break
        assert time.monotonic() < deadline, app.logs
        time.sleep(2)
    pods = {line.split("/", 1)[0] for line in app.logs}
    assert len(pods) == 4
    assert not any("logs unavailable" in line for line in app.logs)
    assert any("BackOff" in line for line in app.events)


def test_statefulset_and_daemonset(real: Real) -> None:
    real.create(deployment_manifest("sts", IMAGE, 2, kind="StatefulSet"))
    real.create(deployment_manifest("agent", IMAGE, kind="DaemonSet"))
    adapter, target = KubernetesAdapter(), real.target("sts", "agent")
    _ready(adapter, target, "sts")
    _ready(adapter, target, "agent")
    _, result = _apply(adapter, target, sts=ServiceChange(image=IMAGE_2, replicas=3))
    assert result.ok, result.reason
    _, result = _apply(adapter, target, agent=ServiceChange(image=IMAGE_2))
    assert result.ok, result.reason
    with pytest.raises(RuntimeRefused, match="DaemonSet"):
        adapter.plan(target, {"agent": ServiceChange(replicas=2)})
    described = adapter.describe(target).services
    assert described["sts"].image == described["agent"].image == IMAGE_2


def test_drift_covers_the_whole_live_spec(real: Real) -> None:
    real.create(deployment_manifest("app", IMAGE))
    adapter, target = KubernetesAdapter(), real.target("app")
    _ready(adapter, target, "app")
    plan = adapter.plan(target, {"app": ServiceChange(image=IMAGE_2)})
    assert adapter.fingerprint(target, ["app"]) == plan.base_fingerprint
    real.apps().patch_namespaced_deployment("app", real.namespace, {"spec": {"minReadySeconds": 3}})
    assert adapter.fingerprint(target, ["app"]) != plan.base_fingerprint
