"""The read pages answer, byte for byte, what views built from ORM entities answer.

The releases page, one release and the inbox are built from plain column rows read by position
(core.releases.rows, core.approvals.rows): a speed-up that must never become a second answer.
Each body here is compared with the same view built from entities (the release, its newest
preview and ticket as ORM objects), for callers with different rights on a varied world:
pending, two-step with one decision (emoji comment), rejected (a 2,000-character reason, the
most it takes), cancelled, applied, a frozen project, a project the caller cannot see.
"""

from __future__ import annotations

from sqlalchemy import select

from core.approvals.models import ApprovalTicket
from core.approvals.tickets import current_ticket
from core.flows.views import loaded_with, view
from core.permissions import Action
from core.releases.models import Release
from core.releases.queries import current_preview, load_release
from core.releases.schemas import ApprovalPage, ApprovalRead, ReleasePage, ReleaseRead
from tests.api.conftest import Api
from tests.conftest import World
from tests.support.calls import call, deploy

USERS = ("admin", "alice", "bob", "frank", "carol", "victor")


def _varied(world: World) -> None:
    pending = deploy(world, "alice", "shop", "prod", web={"image_tag": "1.5.0"})
    call(world, "alice", "submit_release", release_id=pending.id)
    two_step = deploy(world, "alice", "payment", "prod", gateway={"image_tag": "3.1"})
    call(world, "alice", "submit_release", release_id=two_step.id)
    call(world, "frank", "approve_release", release_id=two_step.id, comment="ok 🚀" * 40)
    rejected = deploy(world, "alice", "shop", "prod", api={"image_tag": "2.1.0"})
    call(world, "alice", "submit_release", release_id=rejected.id)
    call(world, "dave", "reject_release", release_id=rejected.id, reason="界" * 2_000)
    applied = deploy(world, "alice", "shop", "dev", web={"image_tag": "1.6.0"})
    call(world, "alice", "submit_release", release_id=applied.id)
    cancelled = deploy(world, "alice", "shop", "staging", worker={"image_tag": "9"})
    call(world, "alice", "cancel_release", release_id=cancelled.id)
    deploy(world, "alice", "shop", "dev", api={"image_tag": "2.2.0"})
    call(world, "admin", "declare_freeze", project="payment", duration_minutes=600, reason="🚀 42")
    world.services.runner.drain()


def _entity_views(world: World, user: str) -> list[ReleaseRead]:
    """Every release the user may view, newest first, each built from ORM entities."""
    actor = world.actor(user)
    views = []
    with world.services.sessions() as session:
        for number in session.scalars(select(Release.number).order_by(Release.number.desc())):
            release = load_release(session, number)
            if not actor.can(Action.view, release.project_id):
                continue
            preview = current_preview(session, number)
            ticket = current_ticket(session, number)
            loaded = loaded_with(session, release, actor, preview, ticket)
            views.append(view(session, release, actor, loaded))
    return views


def test_pages_answer_what_entity_views_answer(api: Api) -> None:
    world = api.world
    _varied(world)
    with world.services.sessions() as session:
        tickets = set(session.scalars(select(ApprovalTicket.id)))
    assert len(tickets) == 3  # one per submitted release that needs approval
    for user in USERS:
        views = _entity_views(world, user)
        page = api.get("/api/v1/releases", user=user)
        assert page.status_code == 200, page.text
        expected = ReleasePage(items=views, next_before=None).model_dump_json().encode()
        assert page.content == expected, user
        for one in views:
            answer = api.get(f"/api/v1/releases/{one.id}", user=user)
            assert answer.content == one.model_dump_json().encode(), (user, one.id)
        # the inbox: every ticket the user may see, newest first, as its release shows it
        approvals: list[ApprovalRead] = sorted(
            (v.approval for v in views if v.approval is not None),
            key=lambda a: a.ticket_id,
            reverse=True,
        )
        assert {a.ticket_id for a in approvals} <= tickets
        inbox = api.get("/api/v1/approvals", user=user)
        assert inbox.status_code == 200, inbox.text
        expected = ApprovalPage(items=approvals, next_before=None).model_dump_json().encode()
        assert inbox.content == expected, user
    # victor views shop only: payment's releases are absent, and one of them is a 404
    seen = api.get("/api/v1/releases", user="victor").json()["items"]
    assert {item["project"] for item in seen} == {"shop"}
    hidden = next(n for n, p in _numbers_by_project(world).items() if p == "payment")
    assert api.get(f"/api/v1/releases/R-{hidden}", user="victor").status_code == 404


def _numbers_by_project(world: World) -> dict[int, str]:
    with world.services.sessions() as session:
        return {r.number: r.project.name for r in session.scalars(select(Release))}
