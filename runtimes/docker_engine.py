"""Reads of a Docker engine for the compose adapter: one consistent snapshot per look.

python-on-whales inspects each listed container lazily, one `docker` process per container,
and again whenever its 10 ms cache lapses, so one look at a project cost 3-9 processes (20-90
ms each) and mixed moments. A look here is ONE snapshot over the Engine API, through the
Docker SDK's low-level client: a list plus one inspect per container, a few ms over the local
socket. The SDK reaches unix:// and tcp:// (TLS from DOCKER_TLS_VERIFY/DOCKER_CERT_PATH, as
`docker.from_env` does) and ssh:// through the system `ssh` (`docker system dial-stdio` on the
far end). Writes (`compose up`) stay with the docker CLI.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import docker
import requests
import urllib3
from docker.errors import DockerException, NotFound
from docker.types.daemon import CancellableStream
from docker.utils import kwargs_from_env

REQUEST_SECONDS = 10
# What ends a run without a health check: any of these inside its window fails the window.
STOPPING_EVENTS = ("die", "oom", "kill", "pause", "destroy")
# Every way the SDK's transport reports an engine that did not answer.
_UNREACHABLE = (DockerException, requests.RequestException, urllib3.exceptions.HTTPError, OSError)


class EngineUnreachable(Exception):
    """The engine did not answer (no socket, refused, timed out)."""


@dataclass(frozen=True)
class Box:
    """One container as the engine showed it at one moment."""

    id: str
    name: str
    service: str
    image: str  # as written in the compose file (Config.Image)
    image_id: str
    env: tuple[str, ...]
    status: str
    running: bool
    restarting: bool
    exit_code: int
    restart_count: int
    started_at: datetime | None
    health: str | None  # Docker's verdict when the image or file has a health check
    labels: dict[str, str] = field(default_factory=dict)


def parse_time(raw: str | None) -> datetime | None:
    """Docker's RFC 3339 time (nanoseconds, `Z`); None for the zero time of a never-started one."""
    if not raw or raw.startswith("0001-"):
        return None
    head, dot, rest = raw.replace("Z", "+00:00").partition(".")
    if not dot:
        return datetime.fromisoformat(head)
    digits = rest[: len(rest) - len(rest.lstrip("0123456789"))]
    # fromisoformat takes at most microseconds
    return datetime.fromisoformat(f"{head}.{digits[:6] or '0'}{rest[len(digits) :]}")


def box(raw: dict[str, Any], service_label: str) -> Box:
    """A container from its Engine API inspect document."""
    config = raw.get("Config") or {}
    state = raw.get("State") or {}
    health = state.get("Health") or {}
    labels = dict(config.get("Labels") or {})
    return Box(
        id=str(raw.get("Id", "")),
        name=str(raw.get("Name", "")).lstrip("/"),
        service=labels.get(service_label, ""),
        image=str(config.get("Image") or ""),
        image_id=str(raw.get("Image") or ""),
        env=tuple(config.get("Env") or ()),
        status=str(state.get("Status") or ""),
        running=bool(state.get("Running")),
        restarting=bool(state.get("Restarting")),
        exit_code=int(state.get("ExitCode") or 0),
        restart_count=int(raw.get("RestartCount") or 0),
        started_at=parse_time(state.get("StartedAt")) if state.get("Running") else None,
        health=str(health["Status"]) if health.get("Status") else None,
        labels=labels,
    )


class Engine:
    """The Engine API of one target's docker host (DOCKER_HOST or the local socket by default)."""

    def __init__(self, host: str | None, stall_seconds: float = REQUEST_SECONDS) -> None:
        self._host = host
        self.stall_seconds = stall_seconds
        self.host = host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()

    def _api(self) -> docker.APIClient:
        # Built at the first look, not at start-up: the SDK asks the engine its API version
        # while it is built, and an engine that is down then may be up at the next look.
        with self._lock:
            if self._client is None:
                try:
                    client = docker.DockerClient(timeout=REQUEST_SECONDS, **self._options())
                except _UNREACHABLE as exc:  # TLS files missing included
                    raise EngineUnreachable(_reason(exc)) from exc
                if self.host.startswith("unix://"):
                    # No proxy reaches a unix socket: skip requests' scan of the environment
                    # for proxy settings on every request (a fifth of a snapshot's time).
                    client.api.trust_env = False
                self._client = client
            return self._client.api

    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = dict(kwargs_from_env())  # DOCKER_HOST, DOCKER_TLS_VERIFY, ...
        if self._host:
            options["base_url"] = self._host
        if self.host.startswith("ssh://"):
            options.pop("tls", None)
            options["use_ssh_client"] = True  # the system ssh and its config, not paramiko
        return options

    def close(self) -> None:
        """Close the connections to the engine."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def containers(self, label: str) -> list[dict[str, Any]]:
        """Inspect documents of every container (running or not) carrying `label`."""
        api = self._api()
        found: list[dict[str, Any]] = []
        try:
            for summary in api.containers(all=True, filters={"label": [label]}):
                try:
                    found.append(api.inspect_container(summary["Id"]))
                except NotFound:  # removed between the list and the inspect: not there
                    continue
        except _UNREACHABLE as exc:
            raise EngineUnreachable(_reason(exc)) from exc
        return found

    def image_env(self, image_id: str) -> list[str] | None:
        """The environment an image bakes in (None when the image is unknown)."""
        api = self._api()
        try:
            # types-docker leaves inspect_image unannotated; it returns the inspect document
            document: dict[str, Any] = api.inspect_image(image_id)  # type: ignore[no-untyped-call]
        except NotFound:
            return None
        except _UNREACHABLE as exc:
            raise EngineUnreachable(_reason(exc)) from exc
        return list((document.get("Config") or {}).get("Env") or [])

    def stopping_events(self, ids: list[str], since: datetime, until: datetime) -> list[str]:
        """Events that stopped any of `ids` between `since` and `until` (engine clock).

        Returns as soon as one happens, else when the engine's clock passes `until`: the
        engine itself times the window, without a look after it ends.
        """
        api = self._api()
        filters = {"container": ids, "event": list(STOPPING_EVENTS), "type": ["container"]}
        # The engine takes "seconds.nanoseconds" and the SDK passes a string through; a
        # datetime it would cut to whole seconds (its stubs list only those), ending a window
        # up to a second early.
        start: Any = f"{since.timestamp():.9f}"
        end: Any = f"{until.timestamp():.9f}"
        # The SDK reads events without a timeout: an engine that stops answering would hold
        # the apply forever. A watchdog ends the stream `stall_seconds` after the window.
        stalled = threading.Event()
        wait = max(0.0, until.timestamp() - time.time()) + self.stall_seconds
        try:
            stream = api.events(since=start, until=end, filters=filters, decode=True)

            def stall() -> None:
                stalled.set()
                _cancel(stream)

            watchdog = threading.Timer(wait, stall)
            watchdog.daemon = True
            watchdog.start()
            try:
                for event in stream:
                    action = str(event.get("Action") or event.get("status") or "")
                    if action.split(":")[0] in STOPPING_EVENTS:
                        return [action]
            finally:
                watchdog.cancel()
                if not stalled.is_set():
                    _cancel(stream)
        except _UNREACHABLE as exc:
            if stalled.is_set():
                raise EngineUnreachable(self._stalled_reason()) from exc
            raise EngineUnreachable(_reason(exc)) from exc
        if stalled.is_set():
            raise EngineUnreachable(self._stalled_reason())
        return []

    def _stalled_reason(self) -> str:
        return f"the engine's event stream did not end {self.stall_seconds:g} s after the window"


def _cancel(stream: CancellableStream[Any]) -> None:
    """End an events stream left before the engine ended it (its connection goes with it)."""
    try:
        stream.close()
    except (DockerException, UnboundLocalError):
        # docker 7.1-7.2 cannot find the socket under an ssh transport (paramiko: "not
        # supported"; the ssh client: an UnboundLocalError in close()). Closing the HTTP
        # response ends the stream as well, here in the thread that reads it.
        response: requests.Response = stream._response  # type: ignore[attr-defined]
        response.close()


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
