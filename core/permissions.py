"""Roles, actions and the actor every core call is made by."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from core.errors import PermissionDenied


class Role(StrEnum):
    """Roles in increasing power; each includes the ones before it."""

    viewer = "viewer"
    requester = "requester"
    approver = "approver"
    admin = "admin"


RANK = {Role.viewer: 0, Role.requester: 1, Role.approver: 2, Role.admin: 3}


class Action(StrEnum):
    """What an actor wants to do; each needs a minimum role on the project."""

    view = "view"
    request = "request"
    approve = "approve"
    admin = "admin"


REQUIRED_ROLE = {
    Action.view: Role.viewer,
    Action.request: Role.requester,
    Action.approve: Role.approver,
    Action.admin: Role.admin,
}


class Channel(StrEnum):
    """The door a call came through, recorded in the audit stream."""

    chat = "chat"
    rest = "rest"
    page = "page"
    cli = "cli"
    mcp = "mcp"
    slack = "slack"
    feishu = "feishu"
    system = "system"


@dataclass(frozen=True)
class Actor:
    """Who is acting, with their grants (project id, or None for all projects) and door."""

    user_id: int | None
    name: str
    grants: Mapping[int | None, Role] = field(default_factory=dict)
    channel: Channel = Channel.rest
    request_id: str | None = None
    on_behalf_of: str | None = None
    # The projects its grants name, id by name, read with the grants: a call naming one of
    # them learns its id without asking the database (compared by grants alone).
    projects: Mapping[str, int] = field(default_factory=dict, compare=False)

    def role_on(self, project_id: int | None) -> Role | None:
        """The strongest role the actor holds on a project (global grants included)."""
        # Grants are keyed by project: only the global entry and this project's can apply
        # (a page asks this several times per row; no scan of every grant).
        everywhere = self.grants.get(None)
        here = self.grants.get(project_id) if project_id is not None else None
        if everywhere is None or here is None:
            return here if everywhere is None else everywhere
        return here if RANK[here] > RANK[everywhere] else everywhere

    def can(self, action: Action, project_id: int | None) -> bool:
        """Whether the actor's role on the project allows the action."""
        role = self.role_on(project_id)
        return role is not None and RANK[role] >= RANK[REQUIRED_ROLE[action]]

    def visible_projects(self) -> list[int] | None:
        """The ids of the projects it has a role on, ascending; None when a global grant shows
        it every project."""
        if self.grants.get(None) is not None:
            return None
        return sorted(p for p in self.grants if p is not None)

    @property
    def is_admin(self) -> bool:
        """Admin on every project."""
        return self.grants.get(None) == Role.admin

    def via(self, channel: Channel, request_id: str | None = None) -> Actor:
        """The same actor calling through another door."""
        return replace(self, channel=channel, request_id=request_id)


SYSTEM = Actor(user_id=None, name="system", grants={None: Role.admin}, channel=Channel.system)


def require(actor: Actor, action: Action, project_id: int | None, project_name: str = "") -> None:
    """Raise PermissionDenied unless the actor may do `action` on the project."""
    if not actor.can(action, project_id):
        where = f"project {project_name}" if project_name else "this project"
        needed = REQUIRED_ROLE[action].value
        raise PermissionDenied(
            f"{actor.name} needs the {needed} role on {where} to {action.value}",
            required_role=needed,
            project=project_name or None,
        )
