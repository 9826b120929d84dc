"""The web console and the API docs: static files served by the app itself (no build step)."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC = Path(__file__).resolve().parent.parent / "static"
# Swagger UI 5 (it reads OpenAPI 3.1) from the files the `fastapi-offline` package ships, served
# here: /docs works without reaching a CDN.
SWAGGER = Path(fastapi_offline.__file__).resolve().parent / "static"
router = APIRouter(include_in_schema=False)


@router.get("/")
def index() -> FileResponse:
    """The console's single page; everything else is under /static."""
    return FileResponse(STATIC / "index.html")


@router.get("/docs")
def docs() -> FileResponse:
    """Swagger UI for the OpenAPI document, from local files."""
    return FileResponse(STATIC / "docs.html")
