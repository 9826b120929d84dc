"""The Kubernetes runtime: Deployments, StatefulSets and DaemonSets through the official client."""

from runtimes.kubernetes.adapter import KubernetesAdapter
from runtimes.kubernetes.connection import KubeConnection

__all__ = ["KubeConnection", "KubernetesAdapter"]
