"""Not found or not yours: one answer, so no door tells whether a project exists.

Every tool call (REST, the tool door, chat) passes its arguments through `conceal` before core
runs: a project or release the caller has no role on gets exactly the answer a nonexistent one
gets. A tool whose core answers a hidden release as a missing one itself, in its one read of
the release, skips the release part (`Tool.conceals_itself`: a release's views, its
decisions). Core's own checks still run afterwards; this only removes the difference between
"absent" and "hidden".
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from core.errors import InvalidInput, NotFound
from core.ids import parse_release_id, release_id
from core.permissions import Action, Actor
from core.releases.models import Release
from core.releases.queries import missing_release
from core.targets.models import Project

RELEASE_FIELDS = ("release_id", "to_release_id")
# built once: every call naming a project or a release runs one of them
_PROJECT_ID = select(Project.id).where(Project.name == bindparam("name"))
_RELEASE_PROJECT = select(Release.project_id).where(Release.number == bindparam("number"))


def missing_project(session: Session, actor: Actor, name: str) -> NotFound:
    """The error a nonexistent project gets; `known` lists only projects the caller can see."""
    return NotFound(
        f"no project named {name!r}", project=name, known=visible_projects(session, actor)
    )


def visible_projects(session: Session, actor: Actor) -> list[str]:
    """Names of the projects the actor has any role on."""
    rows = session.execute(select(Project.id, Project.name).order_by(Project.name))
    return [name for pid, name in rows if actor.can(Action.view, pid)]


def can_see_release(session: Session, actor: Actor, number: int) -> bool:
    """Whether the release exists and the actor has a role on its project."""
    project_id = session.scalar(_RELEASE_PROJECT, {"number": number})
    return project_id is not None and actor.can(Action.view, project_id)


def check_release(
    session: Session, actor: Actor, value: str | int, *, load: bool = False
) -> Release | None:
    """Raise the nonexistent-release NotFound unless the actor can see the release.

    `load`: read the whole release into the session, not only its project, and return it. A
    mutating call's core loads the release it names next (`load_release`) and finds it in
    the session: the check and the load are one statement.
    """
    try:
        number = parse_release_id(value)
    except InvalidInput:
        return None  # core refuses a malformed id with the same answer for everyone
    if not load:
        if not can_see_release(session, actor, number):
            raise missing_release(number)
        return None
    release = session.get(Release, number)
    if release is None or not actor.can(Action.view, release.project_id):
        raise missing_release(number)
    return release


def check_project(session: Session, actor: Actor, name: str) -> None:
    """Raise the nonexistent-project NotFound unless the actor can see the project."""
    # one of the caller's own projects (its grants, read with its token) needs no statement
    project_id = actor.projects.get(name.lower())
    if project_id is None:
        project_id = session.scalar(_PROJECT_ID, {"name": name.lower()})
    if project_id is None or not actor.can(Action.view, project_id):
        raise missing_project(session, actor, name)


def conceal(
    session: Session, actor: Actor, args: BaseModel, *, load: bool = False, releases: bool = True
) -> list[Release]:
    """Check every project and single release an input names (batch ids are checked per item).

    `load`: the releases named are read whole into the session and returned (see
    `check_release`). The session holds entities weakly: keep them while the call runs.
    `releases=False`: the call's core answers hidden releases as missing ones itself."""
    fields = args.model_dump()
    project = fields.get("project")
    if isinstance(project, str):
        check_project(session, actor, project)
    loaded: list[Release] = []
    for name in RELEASE_FIELDS if releases else ():
        value = fields.get(name)
        if isinstance(value, str):
            release = check_release(session, actor, value, load=load)
            if release is not None:
                loaded.append(release)
    return loaded


def hidden_releases(session: Session, actor: Actor, values: Iterable[str]) -> set[str]:
    """The ids (as `R-n`) among `values` the actor cannot see (nonexistent ones included)."""
    hidden = set()
    for value in values:
        try:
            number = parse_release_id(value)
        except InvalidInput:
            continue
        if not can_see_release(session, actor, number):
            hidden.add(release_id(number))
    return hidden
