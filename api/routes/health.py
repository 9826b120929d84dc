"""Liveness and readiness; the only routes without a token."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(services: ServicesDep) -> JSONResponse:
    """The database answers and the runtimes are wired."""
    try:
        with services.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # readiness reports, it does not raise
        return JSONResponse(
            {"status": "unavailable", "database": f"{type(exc).__name__}"}, status_code=503
        )
    return JSONResponse({"status": "ready", "runtimes": services.runtimes.names})
