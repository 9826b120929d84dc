"""Users, grants, groups and tokens."""

from __future__ import annotations

import re

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.util import identity_key

from core.audit.service import record
from core.errors import InvalidInput, NotFound, PermissionDenied
from core.identity.models import Grant, Group, GroupMember, User
from core.identity.tokens import authenticate_token, grant_token
from core.identity.tokens import hash_token as hash_token  # kept importable from here
from core.identity.tokens import issue_token as issue_token
from core.permissions import RANK, Action, Actor, Channel, Role, require
from core.targets.models import Project
from core.targets.parts import load_part

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


def ensure_user(session: Session, name: str) -> User:
    """The user with this name, created if missing."""
    if not NAME.match(name):
        raise InvalidInput(f"{name!r} is not a valid user name", name=name)
    user = session.scalars(select(User).where(User.name == name)).first()
    if user is None:
        user = User(name=name)
        session.add(user)
        session.flush()
    return user


def set_grant(
    session: Session, user: User, role: Role, project_id: int | None, *, upgrade_only: bool = False
) -> None:
    """Give a user a role on a project (or all projects); `upgrade_only` never lowers one."""
    grant = session.scalars(
        select(Grant).where(
            Grant.user_id == user.id,
            Grant.project_id.is_(None) if project_id is None else Grant.project_id == project_id,
        )
    ).first()
    if grant is None:
        session.add(Grant(user_id=user.id, project_id=project_id, role=role.value))
    elif not upgrade_only or RANK[role] > RANK[Role(grant.role)]:
        grant.role = role.value
    session.flush()
    session.expire(user, ["grants"])


def ensure_group_member(session: Session, user: User, group: str, project_id: int | None) -> None:
    """Put a user in a group (global when project_id is None)."""
    found = session.scalars(
        select(Group).where(
            Group.name == group,
            Group.project_id.is_(None) if project_id is None else Group.project_id == project_id,
        )
    ).first()
    if found is None:
        found = Group(name=group, project_id=project_id)
        session.add(found)
        session.flush()
    if session.get(GroupMember, (found.id, user.id)) is None:
        session.add(GroupMember(group_id=found.id, user_id=user.id))
        session.flush()


def person(session: Session, actor: Actor) -> User:
    """The acting person's row, for what they change to name them (requester, decider).

    Not read again: the token check read the actor's id and name a moment ago; a change needs
    the id and its answer the name (a SELECT of the row was a tenth of a preview's
    statements). Users are never deleted; the row's other columns load if something asks.
    """
    if actor.user_id is None:
        raise ValueError(f"{actor.name} acts for no user")
    held = session.identity_map.get(identity_key(User, actor.user_id))
    if isinstance(held, User):
        return held
    user = User(id=actor.user_id, name=actor.name)
    make_transient_to_detached(user)  # persistent and clean once added: nothing to write
    session.add(user)
    return user


def actor_for(user: User, channel: Channel = Channel.rest, request_id: str | None = None) -> Actor:
    """The Actor of a user, with their grants."""
    grants = {g.project_id: Role(g.role) for g in user.grants}
    return Actor(user.id, user.name, grants, channel, request_id)


def authenticate(session: Session, token: str) -> Actor | None:
    """The actor a bearer token belongs to, or None (unknown, revoked or expired)."""
    credential = authenticate_token(session, token)
    return credential.actor if credential is not None else None


def add_user(
    session: Session, *, actor: Actor, name: str, role: Role, project: str | None = None
) -> str:
    """Create (or re-grant) a user with a role, issue a token and return it. Commits.

    Serialised with declaration loads and sign-ins, which write the same people, and run
    again from its read if it still loses a race for them (core/targets/parts.py)."""
    require(actor, Action.admin, None)

    def write() -> str:
        project_id: int | None = None
        if project is not None:
            found = session.scalars(select(Project).where(Project.name == project)).first()
            if found is None:
                raise NotFound(f"no project named {project!r}", project=project)
            project_id = found.id
        user = ensure_user(session, name)
        set_grant(session, user, role, project_id)
        if role in (Role.approver, Role.admin) and project_id is not None:
            ensure_group_member(session, user, "approvers", project_id)
        token = grant_token(session, actor=actor, user=user, label="cli")
        record(
            session,
            actor=actor,
            action="user_added",
            project=project,
            data={"user": name, "role": role.value, "project": project},
        )
        session.commit()
        return token

    return load_part(session, what=f"adding user {name}", work=write, again="run it again")


def roles_by_project(session: Session, actor: Actor) -> dict[str, str]:
    """The actor's roles keyed by project name (`*` for all projects)."""
    names: dict[int, str] = dict(session.execute(select(Project.id, Project.name)).all())
    return {
        ("*" if pid is None else names.get(pid, str(pid))): role.value
        for pid, role in actor.grants.items()
    }


AUDITOR_GROUP = "auditor"


def member_of(session: Session, actor: Actor, group: str, project_id: int | None = None) -> bool:
    """Is the actor in the global group of that name (or the project's own, given one)?"""
    if actor.user_id is None:
        return False
    scope: ColumnElement[bool] = Group.project_id.is_(None)
    if project_id is not None:
        scope = or_(scope, Group.project_id == project_id)
    found = session.scalar(
        select(GroupMember.user_id).where(
            GroupMember.user_id == actor.user_id,
            GroupMember.group_id == Group.id,
            Group.name == group,
            scope,
        )
    )
    return found is not None


def require_auditor(session: Session, actor: Actor) -> None:
    """Only admins and members of the global `auditor` group read the whole audit chain."""
    if not actor.is_admin and not member_of(session, actor, AUDITOR_GROUP):
        raise PermissionDenied(
            f"only an admin or a member of the {AUDITOR_GROUP} group may export the audit stream",
            required_role="admin",
        )
