"""Liveness and readiness; the only routes without a token."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text

from api.deps import ServicesDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """The process answers."""

    status: str = Field(examples=["ok"])


class Readiness(BaseModel):
    """Whether the server can serve: database reachable, runtimes wired."""

    status: str = Field(description="ready | unavailable")
    runtimes: list[str] = Field(default_factory=list)
    database: str | None = Field(default=None, description="Why the database is unavailable.")


NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"model": Readiness, "description": "The database does not answer."}
}


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses=NOT_READY)
def readyz(services: ServicesDep) -> JSONResponse:
    """The database answers and the runtimes are wired."""
    try:
        with services.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # readiness reports, it does not raise
        body = Readiness(status="unavailable", database=type(exc).__name__)
        return JSONResponse(body.model_dump(), status_code=503)
    return JSONResponse(Readiness(status="ready", runtimes=services.runtimes.names).model_dump())
