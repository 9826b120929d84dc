"""The HTTP request metrics, and the exposition `GET /metrics` serves (names in
core/metrics.py; the route is api/routes/metrics.py)."""

from __future__ import annotations

import os
import re
import time
import weakref
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from starlette.types import Message, Receive, Scope, Send

from api.asgi import HttpMiddleware
from core.metrics import HTTP_IN_FLIGHT, HTTP_REQUESTS, HTTP_SECONDS

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # the route of a request none took (an unknown path, a 413 body)
MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR"


# Apps mounted or routed outside FastAPI's routes (the MCP door, static files) do not say
# which route took a request; they are named here, by the endpoint the router hands them to.
_NAMED: weakref.WeakKeyDictionary[object, str] = weakref.WeakKeyDictionary()


def name_endpoint(endpoint: object, label: str) -> None:
    """Label the requests an app mounted or routed outside FastAPI's routes answers."""
    _NAMED[endpoint] = label


_CHOSEN = "shipdeck.route_label"  # the scope key of a label a handler chose for its request


def label_request(scope: Scope, label: str) -> None:
    """Count this request under `label` (a constant of the code, never input), not its route:
    a long-poll's time is its wait, and would hide its route's slow answers among minutes."""
    scope[_CHOSEN] = label


def route_of(scope: Scope) -> str:
    """The template of the route that took the request (`/api/v1/releases/{release_id}`),
    never the path itself: one label per distinct path would grow without bound."""
    chosen = scope.get(_CHOSEN)
    if isinstance(chosen, str):
        return chosen
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str) and path:
        return path
    endpoint = scope.get("endpoint")
    try:
        return _NAMED.get(endpoint, UNMATCHED) if endpoint is not None else UNMATCHED
    except TypeError:  # an endpoint that cannot be weakly referenced was never named
        return UNMATCHED


class Metrics(HttpMiddleware):
    """Count and time every HTTP request by method, route template and status."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request, then count and time it."""
        started = time.perf_counter()
        status = 500  # what the server error handler answers if the app raises

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        HTTP_IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, sending)
        finally:
            HTTP_IN_FLIGHT.dec()
            method = scope["method"] if scope["method"] in METHODS else "other"
            route = route_of(scope)
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_SECONDS.labels(method, route).observe(time.perf_counter() - started)


def exposition() -> bytes:
    """Every metric in Prometheus text format: this process's, or all workers' together."""
    directory = os.environ.get(MULTIPROCESS)
    if not directory:
        return generate_latest(REGISTRY)
    forget_dead_workers(Path(directory))
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


_LIVE_FILE = re.compile(r"gauge_live\w*?_(\d+)\.db")


def forget_dead_workers(directory: Path) -> None:
    """Drop the live gauges of workers that are gone (one killed and replaced, say): their
    last values would be added to the living's forever. Counters keep what they counted."""
    for path in directory.iterdir():
        found = _LIVE_FILE.fullmatch(path.name)
        if found is None:
            continue
        try:
            os.kill(int(found.group(1)), 0)
        except ProcessLookupError:
            # two workers scraping at once may both remove it
            path.unlink(missing_ok=True)
        except PermissionError:  # alive, another user's
            continue
