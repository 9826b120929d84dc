"""The tool doors: list every tool's schema, call any tool by name.

Each registered tool gets its own documented operation (`POST /api/v1/tools/preview_release`
with that tool's input and output models), so the OpenAPI document describes every body; any
other name answers 404 in the one error shape.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.deps import ActorDep, ServicesDep
from api.errors import READ, WRITE, responses
from api.invoke import invoke
from tools.base import Tool
from tools.registry import REGISTRY, get_tool

router = APIRouter(prefix="/api/v1/tools", tags=["tools"])


class ToolSchema(BaseModel):
    """One tool: what it does, what it takes and returns, whether it changes anything."""

    name: str
    description: str
    mutating: bool
    permission: str = Field(description="The role action it needs: view, request, approve.")
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]


class ToolList(BaseModel):
    """Every tool of the registry."""

    tools: list[ToolSchema]


@router.get("", response_model=ToolList, responses=responses(401))
def list_tools(actor: ActorDep) -> ToolList:
    """Names, descriptions, JSON schemas and the mutating flag of every tool."""
    return ToolList(tools=[ToolSchema(**tool.schema()) for tool in REGISTRY.values()])


def _door(tool: Tool[Any, Any]) -> Callable[..., JSONResponse]:
    """The endpoint of one tool; its body is the tool's input model."""

    def call(request: Request, services: Any, actor: Any, args: Any = None) -> JSONResponse:
        return invoke(request, services, actor, tool.name, args if args is not None else {})

    schema = tool.input_model.model_json_schema()
    # A body that must name one of several fields (lift_freeze: a project or a freeze id) is
    # required even though no single field is.
    required = bool(schema.get("required") or schema.get("anyOf") or schema.get("oneOf"))
    body = (
        inspect.Parameter(
            "args", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[tool.input_model, Body()]
        )
        if required
        else inspect.Parameter(
            "args",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[tool.input_model | None, Body()],
            default=None,
        )
    )
    call.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request),
            inspect.Parameter("services", inspect.Parameter.KEYWORD_ONLY, annotation=ServicesDep),
            inspect.Parameter("actor", inspect.Parameter.KEYWORD_ONLY, annotation=ActorDep),
            body,
        ]
    )
    call.__name__ = f"tool_{tool.name}"
    call.__doc__ = tool.description
    return call


for _tool in REGISTRY.values():
    router.add_api_route(
        f"/{_tool.name}",
        _door(_tool),
        methods=["POST"],
        response_model=_tool.output_model,
        responses=responses(*(WRITE if _tool.mutating else (*READ, 400, 413)), 502),
        summary=_tool.name,
        description=_tool.description,
    )


@router.post("/{name}", include_in_schema=False)
def call_unknown_tool(
    name: Annotated[str, Path()],
    actor: ActorDep,
) -> JSONResponse:
    """Any name that is not a tool: 404 listing the names (after authentication)."""
    get_tool(name)  # raises NotFound
    raise AssertionError("unreachable: every tool has its own route")
