"""Opt-in: the Kubernetes adapter against a real cluster.

Runs only when SHIPDECK_TEST_KUBECONFIG names a kubeconfig (and optionally
SHIPDECK_TEST_NAMESPACE, default `default`). It creates a Deployment `shipdeck-smoke`,
previews and applies a replica change through the adapter, and deletes it again. No cluster
can run on the CI machines, so this is the one test allowed to skip there.
"""

from __future__ import annotations

import os
import time

import pytest

from runtimes.base import ServiceChange, TargetRef
from runtimes.kubernetes import KubernetesAdapter
from tests.support.kube import apps_api, deployment_manifest

KUBECONFIG = os.environ.get("SHIPDECK_TEST_KUBECONFIG")
NAMESPACE = os.environ.get("SHIPDECK_TEST_NAMESPACE", "default")

pytestmark = [
    pytest.mark.kubernetes,
    pytest.mark.skipif(not KUBECONFIG, reason="opt-in: set SHIPDECK_TEST_KUBECONFIG"),
]


def test_preview_apply_against_a_real_cluster() -> None:
    apps = apps_api(str(KUBECONFIG))
    manifest = deployment_manifest("shipdeck-smoke", "busybox:1.36")
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    container["command"] = ["sh", "-c", "sleep 3600"]
    apps.create_namespaced_deployment(NAMESPACE, manifest)
    try:
        adapter = KubernetesAdapter()
        target = TargetRef(
            target_id=0,
            project="smoke",
            environment="real",
            runtime="kubernetes",
            services=["shipdeck-smoke"],
            connection={"kubeconfig": KUBECONFIG, "namespace": NAMESPACE, "timeout_seconds": 180},
        )
        plan = adapter.plan(target, {"shipdeck-smoke": ServiceChange(replicas=2)})
        assert plan.diff["shipdeck-smoke"]["replicas"].after == 2
        live = apps.read_namespaced_deployment("shipdeck-smoke", NAMESPACE)
        assert live.spec.replicas == 1  # the dry run stored nothing
        result = adapter.apply(plan, lambda *line: None)
        assert result.ok, result.reason
        assert adapter.describe(target).services["shipdeck-smoke"].replicas == 2
    finally:
        apps.delete_namespaced_deployment("shipdeck-smoke", NAMESPACE)
        time.sleep(1)
