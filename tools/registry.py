"""The one list of tools that REST, the agent and the docs all read."""

from __future__ import annotations

from typing import Any

from core.errors import NotFound
from tools import approvals, audit, desk, releases, targets
from tools.base import Tool

REGISTRY: dict[str, Tool[Any, Any]] = {
    t.name: t for module in (targets, releases, desk, approvals, audit) for t in module.TOOLS
}


def get_tool(name: str) -> Tool[Any, Any]:
    """A tool by name, or NotFound listing the names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise NotFound(f"no tool named {name!r}", known=sorted(REGISTRY)) from None
