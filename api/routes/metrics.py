"""`GET /metrics` for Prometheus.

The scrape needs its own bearer token (`SHIPDECK_METRICS_TOKEN`), not a user's: a monitoring
system that holds it can read counts and timings, and do nothing else.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.deps import ServicesDep
from api.errors import ErrorBody, error_body
from api.metrics import exposition

router = APIRouter(tags=["health"])

SCRAPE_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
        "description": "Prometheus text format.",
    },
    401: {"model": ErrorBody, "description": "No bearer token, or not the scrape token."},
    404: {"model": ErrorBody, "description": "Metrics are off: SHIPDECK_METRICS_TOKEN is unset."},
}


@router.get("/metrics", response_class=Response, responses=SCRAPE_ANSWERS)
def metrics(request: Request, services: ServicesDep) -> Response:
    """The server's metrics (requests, tool calls, queueing, retries, the sweeper) for
    Prometheus, with `Authorization: Bearer $SHIPDECK_METRICS_TOKEN`."""
    token = services.settings.metrics_token
    if token is None:
        message = "metrics are off: set SHIPDECK_METRICS_TOKEN and scrape with it"
        return JSONResponse(error_body("not_found", message), status_code=404)
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode("latin-1"), expected
    ):
        return JSONResponse(
            error_body("not_authenticated", "scrape /metrics with the metrics bearer token"),
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)
