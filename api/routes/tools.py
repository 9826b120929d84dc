"""The tool doors: list every tool's schema, call any tool by name."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse

from api.deps import ActorDep, ServicesDep
from api.invoke import invoke
from core.errors import InvalidInput
from tools.registry import REGISTRY, get_tool

router = APIRouter(prefix="/api/v1/tools", tags=["tools"])


@router.get("")
def list_tools(actor: ActorDep) -> dict[str, Any]:
    """Names, descriptions, JSON schemas and the mutating flag of every tool."""
    return {"tools": [tool.schema() for tool in REGISTRY.values()]}


@router.post("/{name}")
def call_tool(
    request: Request,
    services: ServicesDep,
    actor: ActorDep,
    name: str,
    args: Any = Body(default_factory=dict),
) -> JSONResponse:
    """Call a tool with a JSON object of arguments; the same function the routes call."""
    get_tool(name)
    if not isinstance(args, dict):
        raise InvalidInput("the body must be a JSON object of tool arguments")
    return invoke(request, services, actor, name, args)
