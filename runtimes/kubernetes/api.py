"""API clients, one per target kept for the process, and the API server's errors as ours."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from runtimes.base import RuntimeRefused, RuntimeUnavailable
from runtimes.kubernetes.connection import KubeConnection


def api_reason(exc: ApiException) -> str:
    """The API server's own message for a failed call."""
    try:
        body = json.loads(exc.body or "{}")
        return str(body.get("message") or exc.reason)
    except (TypeError, ValueError):
        return str(exc.reason)


def not_found(exc: ApiException) -> bool:
    """True for a 404."""
    return bool(exc.status == 404)


def _config_problem(path: str | None, exc: Exception) -> str:
    """Why a kubeconfig cannot be used, saying nothing of its contents."""
    where = f"the kubeconfig {path}" if path else "the kube config"
    if isinstance(exc, FileNotFoundError):
        return f"{where} does not exist"
    if isinstance(exc, OSError):
        return f"{where} cannot be read ({type(exc).__name__})"
    if isinstance(exc, yaml.YAMLError):
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        return f"{where} is not valid YAML{line}"
    # The loader's own messages quote names and values from the file (a context name can be
    # anything someone pasted there): say what kind of problem it is, nothing from the file.
    return (
        f"{where} is not a usable kubeconfig ({type(exc).__name__}): its current-context, "
        "contexts, clusters and users must name each other"
    )


@dataclass
class Session:
    """One target's API client for a `with` block that turns API errors into ours."""

    api: client.ApiClient
    connection: KubeConnection

    @property
    def namespace(self) -> str:
        """The target's namespace."""
        return self.connection.namespace

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or isinstance(exc, RuntimeRefused | RuntimeUnavailable):
            return
        if isinstance(exc, ApiException):
            if exc.status in (401, 403):
                raise RuntimeUnavailable(
                    f"the API server refused our credentials: {api_reason(exc)}"
                ) from exc
            if exc.status in (400, 404, 409, 422):
                raise RuntimeRefused(api_reason(exc)) from exc
            raise RuntimeUnavailable(
                f"the API server answered {exc.status}: {api_reason(exc)}"
            ) from exc
        if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
            raise RuntimeUnavailable(f"the API server is unreachable: {exc}") from exc
        if isinstance(exc, ConfigException):  # an exec credential plugin failing mid-way
            raise RuntimeRefused(_config_problem(self.connection.kubeconfig, exc)) from exc


class ClientCache:
    """One ApiClient per connection (and kubeconfig version), built once and reused.

    Building a client runs a kubeconfig's exec credential plugin (aws, gcloud, kubelogin):
    one per call would spawn a process per read. A changed kubeconfig file builds a new one.
    """

    def __init__(self) -> None:
        self._clients: dict[tuple[object, ...], client.ApiClient] = {}
        self._lock = threading.Lock()

    def session(self, connection: KubeConnection) -> Session:
        """The target's cached client (built now if it has none yet)."""
        path = connection.kubeconfig or os.environ.get("KUBECONFIG")
        try:
            stamp = Path(path).expanduser().stat().st_mtime_ns if path else None
        except OSError as exc:
            raise RuntimeRefused(_config_problem(path, exc)) from exc
        key = (path, connection.context, stamp)
        with self._lock:
            api = self._clients.get(key)
            if api is None:
                api = self._build(path, connection.context)
                for old in [k for k in self._clients if k[:2] == key[:2]]:
                    self._clients.pop(old).close()  # type: ignore[no-untyped-call]
                self._clients[key] = api
        return Session(api, connection)

    @staticmethod
    def _build(path: str | None, context: str | None) -> client.ApiClient:
        try:
            if path is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
                api = client.ApiClient(configuration)
            else:
                api = config.new_client_from_config(  # type: ignore[no-untyped-call]
                    config_file=path, context=context
                )
        except (
            ConfigException,
            OSError,
            yaml.YAMLError,
            TypeError,
            KeyError,
            ValueError,
            AttributeError,
        ) as exc:
            raise RuntimeRefused(_config_problem(path, exc)) from exc
        api.configuration.retries = 1
        return api
