"""Reads of a Docker engine for the compose adapter: one consistent snapshot per look.

python-on-whales inspects each listed container lazily, one `docker` process per container,
and again whenever its 10 ms cache lapses, so one look at a project cost 3-9 processes (20-90
ms each) and mixed moments. A look here is ONE snapshot: on a local engine (a unix socket,
the default) two or more Engine API requests over the socket, a few ms; on any other host
(tcp://, ssh://: TLS, keys and contexts stay the docker CLI's business) `docker container ls`
plus ONE `docker container inspect` of every id. Writes (`compose up`) stay with the CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

DEFAULT_SOCKET = "/var/run/docker.sock"
REQUEST_SECONDS = 10.0
# What ends a run without a health check: any of these inside its window fails the window.
STOPPING_EVENTS = ("die", "oom", "kill", "pause", "destroy")


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
    """A container from its inspect JSON (the API's and the CLI's are the same document)."""
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
    """The engine of one target: local socket when there is one, else the docker CLI."""

    def __init__(self, host: str | None, docker_cmd: list[str], *, use_socket: bool = True) -> None:
        host = host or os.environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"
        local = use_socket and host.startswith("unix://")
        self.socket = host.removeprefix("unix://") if local else None
        self.docker_cmd = docker_cmd
        self._http: httpx.Client | None = None
        if self.socket is not None:
            # No TLS on a unix socket: skip loading a CA bundle (~0.1 s at the first look).
            transport = httpx.HTTPTransport(uds=self.socket, verify=False)
            self._http = httpx.Client(
                transport=transport, base_url="http://docker", timeout=REQUEST_SECONDS
            )

    def close(self) -> None:
        """Close the socket's connections."""
        if self._http is not None:
            self._http.close()

    # ------------------------------------------------------------------ containers

    def containers(self, label: str) -> list[dict[str, Any]]:
        """Inspect documents of every container (running or not) carrying `label`."""
        if self._http is None:
            return self._cli_containers(label)
        filters = json.dumps({"label": [label]})
        listed = self._get("/containers/json", params={"all": "1", "filters": filters})
        found = []
        for summary in listed:
            try:
                found.append(self._get(f"/containers/{summary['Id']}/json"))
            except _Gone:  # removed between the list and the inspect: not there
                continue
        return found

    def image_env(self, image_id: str) -> list[str] | None:
        """The environment an image bakes in (None when the image is unknown)."""
        if self._http is None:
            out = self._cli(["image", "inspect", image_id], check=False)
            if out is None:
                return None
            documents = json.loads(out)
            return list((documents[0].get("Config") or {}).get("Env") or []) if documents else None
        try:
            document = self._get(f"/images/{image_id}/json")
        except _Gone:
            return None
        return list((document.get("Config") or {}).get("Env") or [])

    def stopping_events(self, ids: list[str], since: datetime, until: datetime) -> list[str]:
        """Events that stopped any of `ids` between `since` and `until` (engine clock).

        Returns as soon as one happens, else when the engine's clock passes `until`: the
        engine itself times the window, without a look after it ends.
        """
        with self._events(ids, since, until) as lines:
            for line in lines:
                if not line.strip():
                    continue
                event = json.loads(line)
                action = str(event.get("Action") or event.get("status") or "")
                if action.split(":")[0] in STOPPING_EVENTS:
                    return [action]
        return []

    @contextmanager
    def _events(self, ids: list[str], since: datetime, until: datetime) -> Iterator[Iterator[str]]:
        stamps = [f"{since.timestamp():.9f}", f"{until.timestamp():.9f}"]
        window = max(0.0, until.timestamp() - since.timestamp())
        if self._http is None:
            flags = [a for i in ids for a in ("--filter", f"container={i}")]
            flags += [a for e in STOPPING_EVENTS for a in ("--filter", f"event={e}")]
            command = [*self.docker_cmd, "events", "--since", stamps[0], "--until", stamps[1]]
            child = subprocess.Popen(
                [*command, *flags, "--format", "{{json .}}"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            try:
                assert child.stdout is not None
                yield iter(child.stdout)
            finally:
                child.kill()
                child.wait()
            return
        filters = json.dumps(
            {"container": ids, "event": list(STOPPING_EVENTS), "type": ["container"]}
        )
        params = {"since": stamps[0], "until": stamps[1], "filters": filters}
        timeout = httpx.Timeout(REQUEST_SECONDS, read=window + REQUEST_SECONDS)
        assert self._http is not None
        try:
            with self._http.stream("GET", "/events", params=params, timeout=timeout) as response:
                response.raise_for_status()
                yield response.iter_lines()
        except httpx.HTTPError as exc:
            raise EngineUnreachable(str(exc) or type(exc).__name__) from exc

    # ------------------------------------------------------------------ transport

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        assert self._http is not None
        try:
            response = self._http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise EngineUnreachable(str(exc) or type(exc).__name__) from exc
        if response.status_code == 404:
            raise _Gone(path)
        if response.status_code >= 400:
            raise EngineUnreachable(f"{path}: {response.status_code} {response.text[:200]}")
        return response.json()

    def _cli_containers(self, label: str) -> list[dict[str, Any]]:
        listed = self._cli(
            ["container", "ls", "-q", "--no-trunc", "--all", "--filter", f"label={label}"]
        )
        ids = (listed or "").split()
        if not ids:
            return []
        # One inspect of every id; a container removed meanwhile makes it exit 1 with the
        # others still printed, so read what it printed.
        out = self._cli(["container", "inspect", *ids], check=False)
        return list(json.loads(out)) if out else []

    def _cli(self, args: list[str], check: bool = True) -> str | None:
        done = subprocess.run(
            [*self.docker_cmd, *args], capture_output=True, text=True, timeout=REQUEST_SECONDS * 3
        )
        if done.returncode != 0 and check:
            text = (done.stderr or done.stdout).strip().splitlines()
            raise EngineUnreachable(text[-1] if text else f"docker exited with {done.returncode}")
        return done.stdout if done.stdout.strip() else None


class _Gone(Exception):
    """The engine answered 404: the object is not there (any more)."""
