"""Users who sign in through an OpenID Connect provider: matched by (issuer, subject), their
provider groups mapped onto shipdeck's global groups and, through configured rules, roles."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.audit.service import record
from core.errors import InvalidInput, NotFound, PermissionDenied
from core.identity.models import Group, GroupMember, User
from core.identity.service import NAME, set_grant
from core.permissions import Actor, Channel, Role
from core.targets.models import Project
from core.targets.parts import take_person_lock

UNSAFE = re.compile(r"[^A-Za-z0-9_.@-]")


@dataclass(frozen=True)
class ExternalIdentity:
    """What a provider vouched for, after its ID token was verified."""

    issuer: str
    subject: str
    username: str
    groups: Sequence[str]


@dataclass(frozen=True)
class RoleRule:
    """A provider group that grants a role, on every project (project None) or one."""

    group: str
    role: Role
    project: str | None


def parse_role_rules(rules: Mapping[str, str]) -> list[RoleRule]:
    """`{"ops": "admin", "shop-devs": "requester@shop"}` as rules; InvalidInput if malformed."""
    parsed = []
    for group, spec in rules.items():
        role, _, project = spec.partition("@")
        try:
            parsed.append(RoleRule(group, Role(role.strip()), project.strip() or None))
        except ValueError:
            raise InvalidInput(f"{spec!r} is not ROLE or ROLE@PROJECT", group=group) from None
    return parsed


def _plain_name(identity: ExternalIdentity) -> str:
    return UNSAFE.sub("-", identity.username.strip())[:64].strip("-._@")


def _username(identity: ExternalIdentity) -> str:
    name = _plain_name(identity)
    if not name or not NAME.match(name):
        raise PermissionDenied("the provider gave no usable user name for this account")
    return name


def _link(session: Session, identity: ExternalIdentity, *, link_by_name: bool) -> User:
    key = f"{identity.issuer} {identity.subject}"[:512]
    user = session.scalars(select(User).where(User.oidc_subject == key)).first()
    if user is not None:
        return user
    name = _username(identity)
    user = session.scalars(select(User).where(User.name == name)).first()
    if user is None:
        user = User(name=name, oidc_subject=key)
        session.add(user)
        session.flush()
        return user
    if user.oidc_subject is None and link_by_name:
        user.oidc_subject = key
        session.flush()
        return user
    # Someone else's account by name: never taken over by a provider-chosen name.
    raise PermissionDenied(
        f"the user name {name!r} belongs to another account; an admin must link it",
        user=name,
    )


def sign_in_external(
    session: Session,
    identity: ExternalIdentity,
    *,
    role_rules: Sequence[RoleRule] = (),
    link_by_name: bool = False,
) -> User:
    """The shipdeck user for a verified provider identity, its groups and roles brought in
    line; audited as `signed_in`. The caller commits.

    Global group membership follows the provider (groups shipdeck does not know are ignored:
    a provider cannot invent an approver group). Roles from `role_rules` are added or raised,
    never lowered here (an admin lowers roles).
    """
    # Two first sign-ins of one person (two tabs) would both create the user; a load or
    # `users add` may be writing the same groups and grants: one at a time. Other people's
    # sign-ins go on meanwhile.
    take_person_lock(session, _plain_name(identity))
    user = _link(session, identity, link_by_name=link_by_name)
    claimed = {g for g in identity.groups if isinstance(g, str)}
    known = {
        g.name: g.id for g in session.scalars(select(Group).where(Group.project_id.is_(None))).all()
    }
    member_of = set(
        session.scalars(
            select(Group.name)
            .join(GroupMember, GroupMember.group_id == Group.id)
            .where(GroupMember.user_id == user.id, Group.project_id.is_(None))
        )
    )
    added = sorted((claimed & known.keys()) - member_of)
    removed = sorted(member_of - claimed)
    for name in added:
        session.add(GroupMember(group_id=known[name], user_id=user.id))
    if removed:
        session.execute(
            delete(GroupMember).where(
                GroupMember.user_id == user.id,
                GroupMember.group_id.in_([known[n] for n in removed]),
            )
        )
    granted = []
    for rule in role_rules:
        if rule.group not in claimed:
            continue
        project_id = None
        if rule.project is not None:
            project = session.scalars(select(Project).where(Project.name == rule.project)).first()
            if project is None:
                raise NotFound(f"OIDC role rule names unknown project {rule.project!r}")
            project_id = project.id
        set_grant(session, user, rule.role, project_id, upgrade_only=True)
        granted.append(f"{rule.role.value}@{rule.project or '*'}")
    session.flush()
    actor = Actor(user.id, user.name, {}, Channel.page)
    record(
        session,
        actor=actor,
        action="signed_in",
        data={
            "issuer": identity.issuer,
            "subject": identity.subject[:256],
            "groups_added": added,
            "groups_removed": removed,
            "roles": granted,
        },
    )
    return user
