"""A randomized governance driver: random users, doors and actions; invariants from the database.

Used by tests/core/test_governance.py (a bounded run per database) and
benchmarks/governance_soak.py (10,000+ steps). Every call goes through a real door: the tool
door in process, REST's `POST /api/v1/tools/{name}`, or a chat session (the words typed, cards
confirmed or approved as offered). After each step the database and the audit stream are checked
for the promises core makes, whatever the calls were.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from agent.session import ChatSession
from api.wiring import Services
from core.approvals.models import ApprovalDecision, ApprovalTicket
from core.audit.models import AuditEvent
from core.errors import ShipdeckError
from core.identity.models import User
from core.identity.service import actor_for, ensure_user, issue_token
from core.policy import decide
from core.releases.models import Preview, Release
from core.targets.models import Target
from tools.registry import get_tool

USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "victor", "admin", "mallory"]
OUTSIDERS = {"mallory"}  # no role anywhere
READ_ONLY = {"victor", "mallory"}
PROJECTS = {"shop": ["web", "api", "worker"], "payment": ["gateway"]}
ENVS = {"shop": ["dev", "staging", "prod"], "payment": ["prod"]}
TAGS = ["1.5.0", "1.6.0", "2.0.0", "1.7.0-broken", "main-4f2a9c1", "💥" * 40, "x" * 300]
PAST_APPLY = {"applying", "applied", "failed", "rolling_back", "rolled_back", "rollback_failed"}


@dataclass
class Report:
    """What a run did and what it found."""

    steps: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)


class Driver:
    """Drives random calls through the doors and checks invariants after each."""

    def __init__(self, services: Services, client: TestClient, tokens: dict[str, str], seed: int):
        self.services = services
        self.client = client
        self.tokens = dict(tokens)
        self.random = random.Random(seed)
        self.report = Report()
        self.checked_seq = 0  # audit events up to here were checked already
        self._sessions: dict[str, tuple[ChatSession, list[dict[str, Any]]]] = {}
        with services.sessions() as session:
            mallory = ensure_user(session, "mallory")
            self.tokens["mallory"] = issue_token(session, mallory)
            session.commit()
            self.actors = {u.name: actor_for(u) for u in session.scalars(select(User))}

    # ------------------------------------------------------------ one step

    def step(self) -> None:
        """One random call by a random user through a random door, then the checks."""
        user = self.random.choice(USERS)
        tool, args = self._random_call()
        if self.random.random() < 0.6:  # mostly move a release on, so the flows go deep
            user, tool, args = self._next_move() or (user, tool, args)
        self.report.calls[tool] += 1
        ok, result = self._call(user, tool, args)
        if not ok:
            self.report.refused[tool] += 1
        elif user in OUTSIDERS and tool not in ("list_targets",):
            self._check_outsider_result(tool, result)
        self.report.steps += 1
        self._check_invariants()

    def _call(self, user: str, tool: str, args: dict[str, Any]) -> tuple[bool, Any]:
        door = self.random.random()
        if door < 0.2:
            self._chat(user, tool, args)
            return False, None  # counted by what it changed, checked by the invariants
        if door < 0.6:
            try:
                out = get_tool(tool).run(self.services.context(self.actors[user]), args)
                return True, out.model_dump(mode="json")
            except ShipdeckError:
                return False, None
        response = self.client.post(
            f"/api/v1/tools/{tool}",
            json=args,
            headers={"Authorization": f"Bearer {self.tokens[user]}"},
        )
        if response.status_code >= 500:
            self.report.violations.append(f"{tool} by {user} via REST: {response.status_code}")
        return response.status_code < 300, response.json() if response.status_code < 300 else None

    # ------------------------------------------------------------ the chat door

    def _chat(self, user: str, tool: str, args: dict[str, Any]) -> None:
        """Say the call in words to the user's chat session; confirm or approve what it offers."""
        self.report.calls["chat"] += 1
        session, frames = self._sessions.get(user) or self._open_chat(user)
        start = len(frames)
        session.handle({"type": "user_message", "text": _words(tool, args)})
        for frame in frames[start:]:
            if frame.get("type") != "card":
                continue
            card = frame["card"]
            if user in OUTSIDERS:
                self.report.violations.append(f"{user} was offered a card: {card.get('tool')}")
            if card.get("state") == "open" and self.random.random() < 0.8:
                action = "approve" if card.get("kind") == "approval" else "confirm"
                session.handle({"type": "card_action", "card_id": card["id"], "action": action})

    def _open_chat(self, user: str) -> tuple[ChatSession, list[dict[str, Any]]]:
        frames: list[dict[str, Any]] = []
        session = ChatSession.open(self.services.chat, self.actors[user], frames.append)
        self._sessions[user] = (session, frames)
        return session, frames

    def _random_call(self) -> tuple[str, dict[str, Any]]:
        project = self.random.choice(list(PROJECTS))
        environment = self.random.choice(ENVS[project])
        release = self._some_release()
        kind = self.random.choices(
            ["preview", "submit", "approve", "reject", "apply", "cancel", "rollback", "read"],
            weights=[5, 4, 4, 1, 3, 1, 1, 3],
        )[0]
        if kind == "preview":
            service = self.random.choice(PROJECTS[project])
            change: dict[str, Any] = (
                {"image_tag": self.random.choice(TAGS)}
                if self.random.random() < 0.8
                else {"replicas": self.random.choice([0, 2, 3, -1])}
            )
            return "preview_release", {
                "project": project,
                "environment": environment,
                "changes": {service: change},
                **({"emergency": True} if self.random.random() < 0.1 else {}),
            }
        if kind == "rollback":
            return "rollback_release", {
                "project": project,
                "environment": environment,
                **({"emergency": True} if self.random.random() < 0.3 else {}),
            }
        if kind == "read":
            tool = self.random.choice(["get_release", "release_timeline", "list_approvals"])
            return tool, ({"release_id": release} if tool != "list_approvals" else {"mine": True})
        if kind == "reject":
            return "reject_release", {"release_id": release, "reason": "💥 no " * 50}
        tool = {
            "submit": "submit_release",
            "approve": "approve_release",
            "apply": "apply_release",
            "cancel": "cancel_release",
        }[kind]
        return tool, {"release_id": release}

    def _next_move(self) -> tuple[str, str, dict[str, Any]] | None:
        with self.services.sessions() as session:
            rows = session.execute(
                select(Release.number, Release.lifecycle_state, User.name)
                .join(User, User.id == Release.requested_by_id)
                .where(Release.lifecycle_state.in_(["previewed", "pending_approval", "approved"]))
                .order_by(Release.number.desc())
                .limit(5)
            ).all()
        if not rows:
            return None
        number, state, requester = self.random.choice(rows)
        tool = {
            "previewed": "submit_release",
            "pending_approval": "approve_release",
            "approved": "apply_release",
        }[state]
        approvers = ["bob", "dave", "erin", "carol", "frank", "admin", requester]
        user = requester if tool != "approve_release" else self.random.choice(approvers)
        return user, tool, {"release_id": f"R-{number}"}

    def _some_release(self) -> str:
        with self.services.sessions() as session:
            newest = session.scalar(select(Release.number).order_by(Release.number.desc()))
        if not newest or self.random.random() < 0.05:
            return "R-99999"
        return f"R-{self.random.randint(max(1, newest - 6), newest)}"

    # ------------------------------------------------------------ invariants

    def _check_outsider_result(self, tool: str, result: Any) -> None:
        items = result.get("items") if isinstance(result, dict) else None
        if items:
            self.report.violations.append(f"an outsider read {len(items)} items via {tool}")
        elif items is None:
            self.report.violations.append(f"an outsider's {tool} succeeded")

    def _check_invariants(self) -> None:
        with self.services.sessions() as session:
            self._no_self_approval(session)
            self._no_change_by_readers(session)
            self._apply_was_approved_and_fresh(session)

    def _no_self_approval(self, session: Session) -> None:
        own = session.scalars(
            select(ApprovalDecision.id)
            .join(ApprovalTicket, ApprovalTicket.id == ApprovalDecision.ticket_id)
            .where(
                ApprovalDecision.user_id == ApprovalTicket.requested_by_id,
                ApprovalDecision.decision == "approve",
            )
        ).first()
        if own is not None:
            self.report.violations.append(f"decision {own} is a requester approving their own")

    def _no_change_by_readers(self, session: Session) -> None:
        changed = session.scalars(
            select(AuditEvent.seq).where(
                AuditEvent.seq > self.checked_seq,
                AuditEvent.actor.in_(READ_ONLY),
                AuditEvent.after_state.is_not(None),
            )
        ).first()
        if changed is not None:
            self.report.violations.append(f"event {changed}: a viewer or outsider changed state")

    def _apply_was_approved_and_fresh(self, session: Session) -> None:
        applies = session.execute(
            select(AuditEvent.release_number, AuditEvent.at, AuditEvent.seq).where(
                AuditEvent.action == "apply", AuditEvent.seq > self.checked_seq
            )
        ).all()
        self.checked_seq = max([self.checked_seq, *(seq for _, _, seq in applies)])
        for number, at, _ in applies:
            release = session.get_one(Release, number)
            preview = session.scalars(
                select(Preview)
                .where(Preview.release_number == number, Preview.created_at <= at)
                .order_by(Preview.id.desc())
            ).first()
            if preview is None or preview.expires_at < at:
                self.report.violations.append(f"R-{number} applied on a stale or missing preview")
            target = session.get_one(Target, release.target_id)
            emergency = release.emergency and release.kind == "rollback"
            if not decide(session, target=target, emergency=emergency).needs_approval:
                continue
            ticket = session.scalars(
                select(ApprovalTicket)
                .where(ApprovalTicket.release_number == number)
                .order_by(ApprovalTicket.id.desc())
            ).first()
            if ticket is None or ticket.state != "approved":
                self.report.violations.append(f"R-{number} applied without an approved ticket")

    def verify(self) -> None:
        """The audit stream verifies (chain intact, every state explained)."""
        result = get_tool("verify_audit").run(self.services.context(self.actors["admin"]), {})
        if not result.ok:
            self.report.violations.append(f"audit verify failed: {result.reason}")


def _words(tool: str, args: dict[str, Any]) -> str:
    """How a person would type the call in chat."""
    release = args.get("release_id", "")
    if tool == "preview_release":
        service, change = next(iter(args["changes"].items()))
        value = change.get("image_tag", f"{change.get('replicas')} replicas")
        return f"deploy {service} {value} to {args['environment']} in {args['project']}"
    if tool == "rollback_release":
        urgent = " emergency" if args.get("emergency") else ""
        return f"roll back {args['project']} {args['environment']}{urgent}"
    if tool == "reject_release":
        return f"reject {release} because {args.get('reason', 'no')}"
    verbs = {
        "submit_release": "submit",
        "approve_release": "approve",
        "apply_release": "apply",
        "cancel_release": "cancel",
        "get_release": "show",
        "release_timeline": "history of",
    }
    if tool in verbs:
        return f"{verbs[tool]} {release}"
    return "what needs my approval?"


def run(
    services: Services, client: TestClient, tokens: dict[str, str], *, steps: int, seed: int
) -> Report:
    """`steps` random steps; audit verified every 100 steps and at the end."""
    driver = Driver(services, client, tokens, seed)
    for number in range(1, steps + 1):
        driver.step()
        if number % 100 == 0:
            driver.verify()
        if driver.report.violations:
            break
    driver.verify()
    return driver.report
