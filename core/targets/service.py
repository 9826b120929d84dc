"""Projects and targets: lookups, the declaration loader and live status."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import bindparam, or_, select
from sqlalchemy.orm import Session, contains_eager

from core.approvals.tickets import approval_timeout_seconds
from core.audit.service import record
from core.config import get_settings
from core.db import WriteLockPacer, plain_rows, utcnow
from core.environments import same_environment
from core.errors import InvalidInput, NotFound, RuntimeFailure
from core.identity.service import ensure_user
from core.ids import release_id
from core.permissions import Action, Actor, Role, require
from core.releases.lifecycle import State
from core.releases.models import Release
from core.targets import grants
from core.targets.models import Freeze, Project, Service, Target
from core.targets.parts import load_part
from core.targets.schemas import (
    Declaration,
    ProjectDecl,
    TargetRead,
    TargetStatus,
    declaration_model,
)
from core.text import first_line
from core.turns import stepped_out
from core.windows import open_window
from runtimes.base import (
    Diagnosis,
    RuntimeAdapter,
    RuntimeRefused,
    RuntimeUnavailable,
    TargetRef,
    is_simulated,
)
from runtimes.registry import RuntimeRegistry

T = TypeVar("T")


def get_project(session: Session, name: str) -> Project:
    """A project by name, or NotFound listing the known ones."""
    project = session.scalars(select(Project).where(Project.name == name.lower())).first()
    if project is None:
        known = session.scalars(select(Project.name).order_by(Project.name)).all()
        raise NotFound(f"no project named {name!r}", project=name, known=list(known))
    return project


# Built once (every preview and rollback runs it): the targets with their project in one
# statement (through `found.targets` it took three: the project, its targets, then each
# target's project again).
_TARGETS = (
    select(Target)
    .join(Target.project)
    .where(Project.name == bindparam("project"))
    .order_by(Target.id)
    .options(contains_eager(Target.project))
)
# The same with the project's services in its rows: a release checks the services it names
# (they were a statement of their own).
_TARGETS_AND_SERVICES = (
    _TARGETS.outerjoin(Project.services)
    .order_by(Service.name)
    .options(contains_eager(Target.project).contains_eager(Project.services))
)


def get_target(
    session: Session, project: str, environment: str, *, services: bool = False
) -> Target:
    """A project's target by environment, or NotFound listing its environments (`services`:
    its project's services are read with it)."""
    params = {"project": project.lower()}
    if services:  # a row per target and service
        targets = list(session.scalars(_TARGETS_AND_SERVICES, params).unique())
    else:
        targets = list(session.scalars(_TARGETS, params))
    known = [t.environment for t in targets]
    index = _pick_environment(known, environment)
    if index is None:
        name = targets[0].project.name if targets else get_project(session, project).name
        raise _no_environment(name, environment, known)
    return targets[index]


def _pick_environment(known: list[str], wanted: str) -> int | None:
    """Where `wanted` is in `known`: by name, else by meaning (`production` finds `prod`)."""
    lowered = wanted.lower()
    for i, environment in enumerate(known):
        if environment == lowered:
            return i
    for i, environment in enumerate(known):
        if same_environment(environment, wanted):
            return i
    return None


def unknown_service(project: str, service: str, known: Iterable[str]) -> NotFound:
    """A service the project does not have is not found, like an unknown environment."""
    return NotFound(
        f"project {project} has no service {service!r}",
        service=service,
        known_services=sorted(known),
    )


def _no_environment(project: str, environment: str, known: list[str]) -> NotFound:
    return NotFound(
        f"project {project} has no {environment!r} environment",
        project=project,
        environment=environment,
        known=known,
    )


def ttl_seconds(target: Target) -> int:
    """The preview TTL of a target (its own, or the configured default)."""
    return target.preview_ttl_seconds or get_settings().preview_ttl_seconds


def freeze_reasons(session: Session, target: Target, now: datetime | None = None) -> list[str]:
    """Why changes to `target` are refused now (empty: they are not)."""
    now = now or utcnow()
    where = f"{target.project.name}/{target.environment}"
    reasons = [
        f"{where} is frozen until {f.until.isoformat(timespec='minutes')} by {f.created_by}: "
        f"{first_line(f.reason)}"
        for f in _active(session, target.project_id, target.environment, now)
    ]
    windows = list(target.windows or [])
    opened = [(w, open_window(w, now)) for w in windows]
    for _, window in opened:
        if window is not None and window.kind == "deny":
            reasons.append(
                f"{where} is in a deny window ({window.cron} {window.timezone}) until "
                f"{window.closes_at.isoformat(timespec='minutes')}"
                + (f": {window.reason}" if window.reason else "")
            )
    allows = [(w, o) for w, o in opened if w["kind"] == "allow"]
    if allows and not any(o is not None for _, o in allows):
        crons = ", ".join(f"{w['cron']} {w.get('timezone', 'UTC')}" for w, _ in allows)
        reasons.append(f"{where} is outside its change windows ({crons})")
    return reasons


_ACTIVE = (
    select(Freeze)
    .where(
        Freeze.project_id == bindparam("project_id"),
        Freeze.lifted_at.is_(None),
        Freeze.until > bindparam("now"),
    )
    .order_by(Freeze.id)
)
_ACTIVE_THERE = _ACTIVE.where(
    or_(Freeze.environment.is_(None), Freeze.environment == bindparam("environment"))
)


def _active(
    session: Session, project_id: int, environment: str | None, now: datetime
) -> list[Freeze]:
    # built once: every submit, decision and apply checks the freezes
    query, params = _ACTIVE, {"project_id": project_id, "now": now}
    if environment is not None:
        query, params = _ACTIVE_THERE, {**params, "environment": environment}
    return list(session.scalars(query, params))


def target_ref(target: Target) -> TargetRef:
    """What the runtime adapter needs to reach a target."""
    return TargetRef(
        target_id=target.id,
        project=target.project.name,
        environment=target.environment,
        runtime=target.runtime,
        services=[s.name for s in target.project.services],
        connection=dict(target.connection),
    )


def adapter_for(runtimes: RuntimeRegistry, target: Target | TargetRef) -> RuntimeAdapter:
    """The adapter of a target's runtime, or RuntimeFailure if this process has none."""
    try:
        return runtimes.get(target.runtime)
    except KeyError as exc:
        raise RuntimeFailure(str(exc.args[0]), runtime=target.runtime) from None


def call_runtime(what: str, fn: Callable[[], T]) -> T:
    """Call an adapter, turning its failures into typed errors that say what was tried.

    The call may wait on the network: it steps out of the thread's turn (core/turns.py)."""
    try:
        with stepped_out():
            return fn()
    except RuntimeUnavailable as exc:
        raise RuntimeFailure(f"could not {what}: {exc}") from exc
    except RuntimeRefused as exc:
        raise InvalidInput(f"could not {what}: {exc}") from exc


def target_read(target: Target, session: Session | None = None) -> TargetRead:
    """The public view of a target (with why it is frozen now, given a session)."""
    return TargetRead(
        project=target.project.name,
        environment=target.environment,
        runtime=target.runtime,
        risk_tier=target.risk_tier,
        simulated=is_simulated(target.runtime),
        services=[s.name for s in target.project.services],
        preview_ttl_seconds=ttl_seconds(target),
        approval_timeout_seconds=approval_timeout_seconds(target),
        apply_on_approval=target.apply_on_approval,
        connection=dict(target.connection),
        windows=list(target.windows or []),
        frozen=freeze_reasons(session, target) if session is not None else [],
    )


def list_targets(session: Session, *, actor: Actor, project: str | None = None) -> list[TargetRead]:
    """Targets the actor can view, optionally of one project."""
    query = select(Target).join(Project).order_by(Project.name, Target.id)
    if project is not None:
        query = query.where(Project.id == get_project(session, project).id)
    targets = [t for t in session.scalars(query) if actor.can(Action.view, t.project_id)]
    return [target_read(t, session) for t in targets]


# Built once: every status question and diagnosis runs it. One plain statement: each target
# of the project with its runtime fields, the project's services (one row each) and the release
# applying there (the database allows one per target); the ORM path (target, project, services,
# then the applying release) was two statements and most of a status question's CPU.
_LIVE = (
    select(
        Target.id,
        Target.project_id,
        Project.name,
        Target.environment,
        Target.runtime,
        Target.connection,
        Service.name.label("service"),
        Release.number.label("applying"),
    )
    .join(Project, Project.id == Target.project_id)
    .outerjoin(Service, Service.project_id == Target.project_id)
    .outerjoin(
        Release,
        (Release.target_id == Target.id) & (Release.lifecycle_state == State.applying.value),
    )
    .where(Project.name == bindparam("project"))
    .order_by(Target.id, Service.name)
)


def live_target(
    session: Session, actor: Actor, project: str, environment: str
) -> tuple[TargetRef, int | None]:
    """A target the actor may view, as its adapter reaches it, and the release applying there."""
    rows = plain_rows(session, _LIVE, {"project": project.lower()})
    targets = {row.id: row for row in rows}  # the first row of each target
    known = [row.environment for row in targets.values()]
    index = _pick_environment(known, environment)
    if index is None:
        name = rows[0].name if rows else get_project(session, project).name
        raise _no_environment(name, environment, known)
    found = list(targets.values())[index]
    require(actor, Action.view, found.project_id, found.name)
    ref = TargetRef(
        target_id=found.id,
        project=found.name,
        environment=found.environment,
        runtime=found.runtime,
        services=[row.service for row in rows if row.id == found.id and row.service is not None],
        connection=dict(found.connection),
    )
    return ref, found.applying


def target_status(
    session: Session, *, actor: Actor, runtimes: RuntimeRegistry, project: str, environment: str
) -> TargetStatus:
    """Live state of every service of a target, read from its runtime."""
    ref, applying = live_target(session, actor, project, environment)
    session.commit()  # no transaction stays open while the runtime is called
    adapter = adapter_for(runtimes, ref)
    live = call_runtime("read the live state", lambda: adapter.describe(ref))
    return TargetStatus(
        project=ref.project,
        environment=ref.environment,
        runtime=ref.runtime,
        simulated=live.simulated,
        services=live.services,
        active_release=release_id(applying) if applying else None,
    )


def diagnose_target(
    session: Session,
    *,
    actor: Actor,
    runtimes: RuntimeRegistry,
    project: str,
    environment: str,
    service: str | None = None,
) -> Diagnosis:
    """Logs, events and health of a target's services."""
    ref, _ = live_target(session, actor, project, environment)
    if service is not None and service not in ref.services:
        raise unknown_service(ref.project, service, ref.services)
    adapter = adapter_for(runtimes, ref)
    session.commit()
    return call_runtime("diagnose the target", lambda: adapter.diagnose(ref, service))


def load_declaration(
    session: Session,
    *,
    actor: Actor,
    declaration: Declaration,
    base_dir: Path | None = None,
    prune: bool = False,
    allowed_roots: Sequence[Path] | None = None,
    on_part: Callable[[list[str]], None] | None = None,
) -> dict[str, Any]:
    """Declare projects, targets, services, people and policies; loading twice changes nothing.

    Relative compose files and kubeconfig paths are taken from `base_dir` (the file's folder);
    every such path must lie there or under `allowed_roots` (default: the
    `allowed_path_roots` setting), or nothing is loaded. Every role, group and policy change is
    an audit event with its before and after. What the file omits is kept; `prune` removes
    group members and policies the file does not list. Returns a summary of what changed.

    Commits once per part: the global groups and policies, then each project, each with its
    own audit events (and a `declaration_loaded` event listing the part's changes). A big file
    never holds the write lock for long, and a failure leaves every part before it loaded and
    audited and the failing part untouched; loading the file again finishes the job.
    `on_part` gets each part's changes as soon as they are committed. Two loads at once end
    as two in a row: each part is serialised with the other loads' and retried from its read
    if it loses a race for the same rows; Conflict if it keeps losing (core/targets/parts.py).
    """
    require(actor, Action.admin, None)
    roots = get_settings().allowed_path_roots if allowed_roots is None else list(allowed_roots)
    # Every path is checked before anything is written: a refused file changes nothing.
    connections = {
        (p.name, t.environment): t.connection(
            base_dir, roots, f"projects.{p.name}.targets.{t.environment}"
        )
        for p in declaration.projects
        for t in p.targets
    }
    changed: list[str] = []
    pacer = WriteLockPacer(session)

    def run(what: str, project: str | None, write: Callable[[grants.Changes], list[str]]) -> None:
        def attempt() -> list[str]:
            # A retried attempt starts from its read with nothing noted (core/targets/parts.py).
            people = grants.Changes()
            part = write(people)
            part.extend(people.lines)
            people.record(session, actor)
            if part:
                data = {"changed": part}
                record(
                    session, actor=actor, action="declaration_loaded", project=project, data=data
                )
            session.commit()
            return part

        part = load_part(session, what=what, work=attempt)
        changed.extend(part)
        if part and on_part is not None:
            on_part(part)
        pacer.committed()

    def load_global(people: grants.Changes) -> list[str]:
        for name, group_members in declaration.groups.items():
            for member in group_members:
                user = ensure_user(session, member)
                grants.join(session, people, user, name, None, None)
                grants.grant(session, people, user, Role.approver, None, None)
            if prune:
                grants.prune(session, people, name, None, None, set(group_members))
        if "policies" in declaration.model_fields_set or prune:
            grants.replace_policies(session, None, declaration.policies, people, None)
        return []

    run("loading the global groups and policies", None, load_global)
    for decl in declaration.projects:

        def load_project(people: grants.Changes, decl: ProjectDecl = decl) -> list[str]:
            return _load_project(session, decl, connections, people, prune)

        run(f"loading project {decl.name}", decl.name, load_project)
    return {"changed": changed}


def _load_project(
    session: Session,
    decl: ProjectDecl,
    connections: dict[tuple[str, str], dict[str, Any]],
    people: grants.Changes,
    prune: bool,
) -> list[str]:
    """Write one project of a declaration (not committed); its changes, people's apart."""
    changed: list[str] = []
    project = session.scalars(select(Project).where(Project.name == decl.name)).first()
    if project is None:
        project = Project(name=decl.name)
        session.add(project)
        session.flush()
        changed.append(f"project {decl.name}")
    if "promotion" in decl.model_fields_set and project.promotion != decl.promotion:
        project.promotion = decl.promotion
        changed.append(f"promotion {decl.name}")
    have = {s.name for s in project.services}
    for service in decl.services:
        if service not in have:
            session.add(Service(project_id=project.id, name=service))
            changed.append(f"service {decl.name}/{service}")
    for tdecl in decl.targets:
        target = next((t for t in project.targets if t.environment == tdecl.environment), None)
        values = {
            "runtime": tdecl.runtime,
            "connection": connections[decl.name, tdecl.environment],
            "risk_tier": tdecl.tier(),
            "preview_ttl_seconds": (
                int(tdecl.preview_ttl_minutes * 60) if tdecl.preview_ttl_minutes else None
            ),
            "apply_on_approval": tdecl.apply_on_approval,
            "windows": [
                w.model_dump(exclude={"environments"})
                for w in [*tdecl.windows, *decl.windows]
                if w.environments is None or tdecl.environment in w.environments
            ],
            "approval_timeout_seconds": (
                int(tdecl.approval_timeout_hours * 3600) if tdecl.approval_timeout_hours else None
            ),
        }
        if target is None:
            session.add(Target(project_id=project.id, environment=tdecl.environment, **values))
            changed.append(f"target {decl.name}/{tdecl.environment}")
        elif any(getattr(target, k) != v for k, v in values.items()):
            for key, value in values.items():
                setattr(target, key, value)
            changed.append(f"target {decl.name}/{tdecl.environment}")
    roles = [
        (decl.owners, Role.approver, "owners"),
        (decl.approvers, Role.approver, "approvers"),
        (decl.requesters, Role.requester, None),
        (decl.viewers, Role.viewer, None),
    ]
    for names, role, group in roles:
        for member in names:
            user = ensure_user(session, member)
            grants.grant(session, people, user, role, project.id, decl.name)
            if group:
                grants.join(session, people, user, group, project.id, decl.name)
        if group and prune:
            grants.prune(session, people, group, project.id, decl.name, set(names))
    if "policies" in decl.model_fields_set or prune:
        grants.replace_policies(session, project.id, decl.policies, people, decl.name)
    session.flush()
    return changed


def parse_declaration(text: str, runtimes: RuntimeRegistry | None = None) -> Declaration:
    """Parse YAML declaration text, or raise InvalidInput saying what is wrong.

    Targets are validated against the connection model of their runtime's adapter: those of
    `runtimes`, or of every adapter this process has loaded.
    """
    import yaml
    from pydantic import ValidationError

    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise InvalidInput(f"the declaration is not valid YAML: {exc}") from exc
    try:
        return declaration_model(runtimes.connection_models() if runtimes else None).model_validate(
            raw
        )
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise InvalidInput("the declaration is invalid: " + "; ".join(problems)) from exc
