"""Grants, group memberships and policies changed by a declaration: each one an audit event.

The loader says what it changed (the CLI prints it) and writes one event per change with the
value before and after, so a file that quietly makes someone a global approver is on record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.audit.service import canonical_json, record
from core.identity.models import Grant, Group, GroupMember, User
from core.identity.service import ensure_group_member, set_grant
from core.permissions import Actor, Role
from core.targets.models import PolicyRule
from core.targets.schemas import PolicyDecl


@dataclass
class Changes:
    """What a load changed: lines for people, events for the audit stream."""

    lines: list[str] = field(default_factory=list)
    events: list[tuple[str, str | None, dict[str, Any]]] = field(default_factory=list)

    def add(self, line: str, action: str, project: str | None, data: dict[str, Any]) -> None:
        """Note one change."""
        self.lines.append(line)
        self.events.append((action, project, data))

    def record(self, session: Session, actor: Actor) -> None:
        """Write one audit event per change (in the caller's transaction)."""
        for action, project, data in self.events:
            record(session, actor=actor, action=action, project=project, data=data)


def _role(session: Session, user: User, project_id: int | None) -> str | None:
    where = Grant.project_id.is_(None) if project_id is None else Grant.project_id == project_id
    return session.scalars(select(Grant.role).where(Grant.user_id == user.id, where)).first()


def grant(
    session: Session,
    changes: Changes,
    user: User,
    role: Role,
    project_id: int | None,
    project: str | None,
) -> None:
    """Raise a user's role (never lowers it), noting the change if there is one."""
    before = _role(session, user, project_id)
    set_grant(session, user, role, project_id, upgrade_only=True)
    after = _role(session, user, project_id)
    if before != after:
        scope = project or "all projects"
        changes.add(
            f"role {user.name} on {scope}: {before or 'none'} -> {after}",
            "grant_changed",
            project,
            {"user": user.name, "project": project, "before": before, "after": after},
        )


def _group(session: Session, name: str, project_id: int | None) -> Group | None:
    where = Group.project_id.is_(None) if project_id is None else Group.project_id == project_id
    return session.scalars(select(Group).where(Group.name == name, where)).first()


def members(session: Session, name: str, project_id: int | None) -> list[str]:
    """The user names in a group, sorted."""
    found = _group(session, name, project_id)
    if found is None:
        return []
    query = (
        select(User.name)
        .join(GroupMember, GroupMember.user_id == User.id)
        .where(GroupMember.group_id == found.id)
        .order_by(User.name)
    )
    return list(session.scalars(query))


def join(
    session: Session,
    changes: Changes,
    user: User,
    group: str,
    project_id: int | None,
    project: str | None,
) -> None:
    """Put a user in a group, noting it if they were not in it."""
    before = members(session, group, project_id)
    if user.name in before:
        return
    ensure_group_member(session, user, group, project_id)
    _note_group(changes, group, project, before, sorted({*before, user.name}))


def prune(
    session: Session,
    changes: Changes,
    group: str,
    project_id: int | None,
    project: str | None,
    keep: set[str],
) -> None:
    """Remove members the declaration no longer lists (only with --prune)."""
    found = _group(session, group, project_id)
    if found is None:
        return
    before = members(session, group, project_id)
    gone = [name for name in before if name not in keep]
    if not gone:
        return
    ids = select(User.id).where(User.name.in_(gone))
    session.execute(
        delete(GroupMember).where(GroupMember.group_id == found.id, GroupMember.user_id.in_(ids))
    )
    session.flush()
    _note_group(changes, group, project, before, [n for n in before if n in keep])


def _note_group(
    changes: Changes, group: str, project: str | None, before: list[str], after: list[str]
) -> None:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    scope = f"{project}/{group}" if project else group
    parts = [f"+{n}" for n in added] + [f"-{n}" for n in removed]
    changes.add(
        f"group {scope}: {' '.join(parts)}",
        "group_changed",
        project,
        {"group": group, "project": project, "before": before, "after": after},
    )


def replace_policies(
    session: Session,
    project_id: int | None,
    policies: list[PolicyDecl],
    changes: Changes,
    project: str | None,
) -> None:
    """Replace a project's (or the global) policy rules with the declared ones, if they differ."""
    where = (
        PolicyRule.project_id.is_(None)
        if project_id is None
        else (PolicyRule.project_id == project_id)
    )
    existing = list(session.scalars(select(PolicyRule).where(where).order_by(PolicyRule.position)))
    before = [_rule(r.environment, r.risk_tier, r.emergency, r.steps) for r in existing]
    after = [
        _rule(p.environment, p.risk_tier, p.emergency, [s.model_dump() for s in p.steps])
        for p in policies
    ]
    if canonical_json(before) == canonical_json(after):
        return
    session.execute(delete(PolicyRule).where(where))
    for position, policy in enumerate(policies):
        session.add(
            PolicyRule(
                project_id=project_id,
                environment=policy.environment,
                risk_tier=policy.risk_tier,
                emergency=policy.emergency,
                position=position,
                steps=[s.model_dump() for s in policy.steps],
            )
        )
    changes.add(
        f"policies {project or 'global'}: {len(before)} -> {len(after)} rules",
        "policies_changed",
        project,
        {"project": project, "before": before, "after": after},
    )


def _rule(env: str | None, tier: str | None, emergency: bool, steps: Any) -> dict[str, Any]:
    return {"environment": env, "risk_tier": tier, "emergency": emergency, "steps": steps}
