"""How a Kubernetes target is reached and which object and container each service is."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from runtimes.base import Connection, DeclaredPath

WorkloadKind = Literal["Deployment", "StatefulSet", "DaemonSet"]


class KubeConnection(Connection):
    """A Kubernetes target's connection: namespace, kubeconfig/context, workloads, timeouts."""

    namespace: str = Field(default="", max_length=63, description="The target's namespace.")
    kubeconfig: Annotated[str | None, DeclaredPath()] = Field(
        default=None, description="Kubeconfig file (default: $KUBECONFIG, else in-cluster)."
    )
    context: str | None = Field(default=None, description="Kubeconfig context to use.")
    timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        description="Cap on the rollout wait; by default it follows each Deployment's "
        "progressDeadlineSeconds (600 when unset) plus a grace.",
    )
    containers: dict[str, str] = Field(
        default_factory=dict,
        description="Container to change per service, when its pods run more than one.",
    )
    kinds: dict[str, WorkloadKind] = Field(
        default_factory=dict,
        description="Workload kind per service (default: the first of Deployment, "
        "StatefulSet, DaemonSet that exists under the service's name).",
    )
    force_conflicts: bool = Field(
        default=False,
        description="Take over fields another field manager owns (Helm, Argo CD, kubectl). "
        "Off by default: a conflict is reported in the preview instead.",
    )

    @model_validator(mode="after")
    def _needs_namespace(self) -> Self:
        if not self.namespace:
            raise ValueError("a kubernetes target needs a namespace")
        return self
