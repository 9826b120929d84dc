"""What an MCP call may do on its own, and what waits for the client's user.

Reads run at once. A preview (or rollback preview, or re-preview) runs at once too, since it
changes nothing on the target; submitting it is a confirmation. Every other mutating tool
(submit, apply, cancel, approve, reject, take over) is a confirmation: it runs only when the
user is allowed to run it AND confirms through MCP elicitation. Without elicitation the call
returns the release, what must happen next and the console link; nothing is assumed.
Everything runs through the registry's tool functions as the token's user on the `mcp`
channel, so core's rules decide exactly as they do for REST and chat.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.wiring import Services
from core.approvals.tickets import approver_condition, current_ticket, eligible_approvers
from core.audit.service import canonical_json, record
from core.errors import Conflict, InvalidInput, PermissionDenied, ShipdeckError
from core.flows.freezes import require_freezer, require_freezer_of
from core.flows.views import get_release
from core.identity.models import User
from core.permissions import Action, Actor
from core.policy import PolicyStep, decide
from core.releases.queries import load_release
from core.releases.schemas import ReleaseRead
from tools.base import Tool, ToolContext
from tools.desk import CONFIRM_TITLES, DeclareFreezeInput, freeze_until
from tools.registry import REGISTRY, get_tool
from tools.visibility import conceal

# Tools that only compute a preview: they run at once, then submitting is confirmed.
PREVIEW_TOOLS = (
    "preview_release",
    "rollback_release",
    "repreview_release",
    "retry_release",
    "promote_release",
)
Answer = Literal["accept", "decline", "cancel"]
PAST = {"accept": "accepted", "decline": "declined", "cancel": "dismissed the question"}


class NextStep(BaseModel):
    """What has to happen to this release next, and who can do it."""

    action: str = Field(
        description="submit_release | approve_release | apply_release | wait | none"
    )
    who: list[str] = Field(default_factory=list, description="Users who can take that action.")
    needs_approval: bool | None = None
    approval_steps: list[PolicyStep] = Field(default_factory=list)
    message: str


class Outcome(BaseModel):
    """What an MCP call did: what ran, the release it left, and what happens next."""

    status: Literal["done", "previewed", "confirmation_required", "declined", "refused"]
    tool: str
    ran: list[str] = Field(description="Registry tools that actually ran, in order.")
    release: ReleaseRead | None = None
    releases: list[ReleaseRead] = Field(default_factory=list)
    result: dict[str, Any] | None = Field(default=None, description="The tool's own output.")
    next: NextStep | None = None
    console_url: str | None = Field(
        default=None, description="Where the user can confirm, approve or follow it."
    )
    message: str


@dataclass
class Ask:
    """A confirmation the user has to give before `tool(args)` runs."""

    tool: str
    args: dict[str, Any]
    title: str
    message: str
    state: str
    on_decline: tuple[str, dict[str, Any]] | None = None


@dataclass
class Plan:
    """The first half of a call: an outcome so far, and perhaps a question for the user."""

    outcome: Outcome
    ask: Ask | None = None
    ran: list[str] = field(default_factory=list)


class Governance:
    """The MCP door's rules, over the same services as every other door."""

    def __init__(self, services: Services, console_url: str | None = None) -> None:
        self.services = services
        self.console_url = console_url.rstrip("/") if console_url else None

    # ------------------------------------------------------------ first pass

    def begin(self, actor: Actor, name: str, args: dict[str, Any]) -> Plan:
        """Run what may run now; return the outcome and the confirmation still needed."""
        tool = get_tool(name)
        if not tool.mutating:
            output = tool.run(self._context(actor), args)
            data = output.model_dump(mode="json")
            return Plan(Outcome(status="done", tool=name, ran=[name], result=data, message="ok"))
        if name in PREVIEW_TOOLS:
            release = ReleaseRead.model_validate(tool.run(self._context(actor), args))
            return self._after_preview(actor, name, release)
        try:
            return self._gate(actor, tool, args)
        except ShipdeckError as exc:
            self.refused(actor, name, args, exc)
            raise

    def resume(self, actor: Actor, name: str, args: dict[str, Any], state: str) -> Plan:
        """Rebuild the question of an earlier pass from its echoed state (2026-07-28 retries).

        The state only says which release the user was asked about; everything is checked
        again against the database, so a stale or forged state asks nothing it should not.
        """
        try:
            tool_name, rid, diff_hash = state.split("|", 2)
        except ValueError:
            raise InvalidInput("the echoed request state is malformed") from None
        if name in PREVIEW_TOOLS and tool_name == "submit_release":
            release = self._release(actor, rid)
            plan = self._after_preview(actor, name, release, ran=[])
        else:
            try:
                plan = self._gate(actor, get_tool(name), args)
            except ShipdeckError as exc:
                self.refused(actor, name, args, exc)
                raise
        if plan.ask is None or plan.ask.state != state:
            what = f"{tool_name} of {rid}" if rid else tool_name
            changed = Conflict(
                f"the {what} you confirmed changed since you were asked (diff {diff_hash[:12]}); "
                "nothing ran: call the tool again to see it",
                release_id=rid or None,
            )
            self.refused(actor, name, args, changed)
            raise changed
        return plan

    # ------------------------------------------------------------ second pass

    def answered(
        self, actor: Actor, plan: Plan, answer: Answer, client: str | None = None
    ) -> Outcome:
        """Act on the user's answer: run the confirmed tool, withdraw, or leave it be."""
        assert plan.ask is not None
        ask = plan.ask
        ran = list(plan.outcome.ran)
        if answer == "accept":
            self._still_as_asked(actor, ask)
            output = get_tool(ask.tool).run(self._context(actor), ask.args)
            ran.append(ask.tool)
            return self._finished(actor, plan.outcome.tool, ask, output, ran)
        self._audit(actor, ask, "declined", {"answer": answer, "client": client})
        release = plan.outcome.release
        if answer == "decline" and ask.on_decline is not None:
            undo, undo_args = ask.on_decline
            release = ReleaseRead.model_validate(
                get_tool(undo).run(self._context(actor), undo_args)
            )
            ran.append(undo)
        return plan.outcome.model_copy(
            update={
                "status": "declined",
                "ran": ran,
                "release": release,
                "next": self._next(actor, release) if release else None,
                "message": f"the user {PAST[answer]}: {ask.tool} did not run"
                + (
                    f"; {ask.on_decline[0]} withdrew it"
                    if answer == "decline" and ask.on_decline
                    else ""
                ),
            }
        )

    def _still_as_asked(self, actor: Actor, ask: Ask) -> None:
        """The user confirmed what they were shown: refuse if the diff changed meanwhile."""
        if ask.tool in CONFIRM_TITLES:
            return  # a freeze carries its whole meaning in its arguments, which were shown
        ids = ask.args.get("release_ids") or [ask.args["release_id"]]
        now = "&".join(self._state(ask.tool, self._release(actor, str(rid))) for rid in ids)
        if now != ask.state:
            exc = Conflict(
                f"{', '.join(map(str, ids))} changed while you were being asked "
                "(it was re-previewed); nothing ran: call the tool again to see the new diff",
                release_id=ids[0],
            )
            self.refused(actor, ask.tool, ask.args, exc)
            raise exc

    def unconfirmed(self, actor: Actor, plan: Plan) -> Outcome:
        """No elicitation in this client: nothing more runs; say where to confirm."""
        assert plan.ask is not None
        ask = plan.ask
        url = plan.outcome.console_url
        if plan.outcome.status == "previewed":
            return plan.outcome.model_copy(
                update={
                    "message": f"{plan.outcome.message}. This client cannot ask you to confirm "
                    f"it: submit it in the console{f' ({url})' if url else ''} or in chat."
                }
            )
        self._audit(actor, ask, "refused", {"error": "confirmation_required"})
        return plan.outcome.model_copy(
            update={
                "status": "confirmation_required",
                "message": f"{ask.tool} was not run: it needs your confirmation and this client "
                f"cannot ask for it. {ask.title} Confirm it in the console"
                f"{f' ({url})' if url else ''} or in chat.",
            }
        )

    def asked(self, actor: Actor, plan: Plan, client: str | None) -> None:
        """Audit that the user is being asked to confirm (whatever they answer, if ever)."""
        assert plan.ask is not None
        self._audit(actor, plan.ask, "confirmation_requested", {"client": client})

    def refused(self, actor: Actor, name: str, args: dict[str, Any], exc: ShipdeckError) -> None:
        """Audit a call refused before any tool ran (tools audit their own refusals)."""
        ask = Ask(tool=name, args=args, title="", message="", state="")
        self._audit(actor, ask, "refused", {"error": exc.code, "message": exc.message})

    # ------------------------------------------------------------ helpers

    def _after_preview(
        self, actor: Actor, name: str, release: ReleaseRead, ran: list[str] | None = None
    ) -> Plan:
        outcome = Outcome(
            status="previewed",
            tool=name,
            ran=[name] if ran is None else ran,
            release=release,
            next=self._next(actor, release),
            console_url=self._url(release.id),
            message=f"{release.id} previewed on {release.project}/{release.environment}; "
            "nothing changed on the target",
        )
        if release.lifecycle_state != "previewed" or not self._may_submit(actor, release):
            return Plan(outcome)
        ask = Ask(
            tool="submit_release",
            args={"release_id": release.id},
            title=f"Submit {release.id} for {release.project}/{release.environment}?",
            message=self._describe(release, "submit"),
            state=self._state("submit_release", release),
            on_decline=(
                "cancel_release",
                {"release_id": release.id, "reason": "declined in the MCP client"},
            ),
        )
        return Plan(outcome, ask)

    def _gate(self, actor: Actor, tool: Tool[Any, Any], args: dict[str, Any]) -> Plan:
        """Check the user could run `tool` at all, then ask them to confirm it."""
        parsed = tool.parse(args).model_dump(mode="json")
        if tool.name in CONFIRM_TITLES:
            return self._gate_freeze(actor, tool, parsed)
        ids: list[str] = parsed.get("release_ids") or [parsed["release_id"]]
        releases = [self._release(actor, rid) for rid in ids]
        for release in releases:
            self._require_allowed(actor, tool, release)
        verb = tool.name.replace("_releases", "").replace("_release", "").replace("_", " ")
        first = releases[0]
        outcome = Outcome(
            status="confirmation_required",
            tool=tool.name,
            ran=[],
            release=first if len(releases) == 1 else None,
            releases=releases if len(releases) > 1 else [],
            next=self._next(actor, first) if len(releases) == 1 else None,
            console_url=self._url(first.id if len(releases) == 1 else None),
            message="waiting for confirmation",
        )
        names = ", ".join(r.id for r in releases)
        ask = Ask(
            tool=tool.name,
            args=parsed,
            title=f"{verb.capitalize()} {names}?",
            message="\n\n".join(self._describe(r, verb) for r in releases),
            state="&".join(self._state(tool.name, r) for r in releases),
        )
        return Plan(outcome, ask)

    def _gate_freeze(self, actor: Actor, tool: Tool[Any, Any], parsed: dict[str, Any]) -> Plan:
        """A freeze or its lift: only admins and the sre group, confirmed like any change."""
        checked = tool.parse(parsed)
        if isinstance(checked, DeclareFreezeInput):
            freeze_until(checked)  # a time already past is refused before anyone is asked
        with self.services.sessions() as session:
            if parsed.get("project") is not None:
                conceal(session, actor, tool.parse(parsed))
                require_freezer(session, actor, str(parsed["project"]))
            else:
                require_freezer_of(session, actor, int(parsed["freeze_id"]))
        args = {k: v for k, v in parsed.items() if v is not None}
        title = CONFIRM_TITLES[tool.name](args)
        outcome = Outcome(
            status="confirmation_required",
            tool=tool.name,
            ran=[],
            console_url=self._url(None),
            message="waiting for confirmation",
        )
        effect = (
            "Submit and apply are refused on it until then (an emergency rollback may pass)."
            if tool.name == "declare_freeze"
            else "Submit and apply may go on there again (unless another freeze or a change "
            "window still holds it)."
        )
        ask = Ask(
            tool=tool.name,
            args=args,
            title=title,
            message=effect,
            state=f"{tool.name}||{hashlib.sha256(canonical_json(args).encode()).hexdigest()}",
        )
        return Plan(outcome, ask)

    def _require_allowed(self, actor: Actor, tool: Tool[Any, Any], release: ReleaseRead) -> None:
        """Whether core would let this user run the tool on the release (no state checks)."""
        with self.services.sessions() as session:
            found = load_release(session, release.id)
            project_id, requester = found.project_id, found.requested_by_id
        if not actor.can(tool.permission, project_id):
            needed = {Action.request: "requester", Action.approve: "approver"}.get(
                tool.permission, tool.permission.value
            )
            raise PermissionDenied(
                f"{actor.name} needs the {needed} role on project {release.project} to run "
                f"{tool.name}",
                required_role=needed,
                project=release.project,
            )
        own = actor.user_id == requester
        if tool.name == "submit_release" and not (own or actor.is_admin):
            raise PermissionDenied(f"only {release.requested_by} may submit {release.id}")
        if tool.name in ("apply_release", "cancel_release") and not (
            own or actor.can(Action.approve, project_id)
        ):
            raise PermissionDenied(
                f"only {release.requested_by} (the requester) or an approver may "
                f"{tool.name.split('_')[0]} {release.id}"
            )
        if tool.permission is Action.approve and tool.name != "takeover_approval":
            if release.approval is None or not release.approval.can_decide:
                raise PermissionDenied(
                    f"{actor.name} cannot decide {release.id} now "
                    f"(it is {release.lifecycle_state}; requesters never approve their own)",
                    release_id=release.id,
                )

    def _finished(
        self, actor: Actor, name: str, ask: Ask, output: BaseModel, ran: list[str]
    ) -> Outcome:
        data = output.model_dump(mode="json")
        release = ReleaseRead.model_validate(data) if isinstance(output, ReleaseRead) else None
        if release is None and "release_id" in ask.args:
            release = self._release(actor, str(ask.args["release_id"]))
        return Outcome(
            status="done",
            tool=name,
            ran=ran,
            release=release,
            result=None if release is not None and isinstance(output, ReleaseRead) else data,
            next=self._next(actor, release) if release else None,
            console_url=self._url(release.id if release else None),
            message=f"confirmed by {actor.name}: {ask.tool} ran"
            + (f"; {release.id} is {release.lifecycle_state}" if release else ""),
        )

    def _next(self, actor: Actor, release: ReleaseRead) -> NextStep:
        """What must happen next for the release, and who can do it."""
        state = release.lifecycle_state
        with self.services.sessions() as session:
            found = load_release(session, release.id)
            if state == "previewed":
                policy = decide(session, target=found.target, emergency=found.emergency)
                who = [found.requested_by.name]
                then = ""
                if policy.needs_approval:
                    approvers = self._approvers(session, found.project_id, policy.steps[0].group)
                    approvers = [a for a in approvers if a != found.requested_by.name]
                    then = f"; then {', '.join(approvers) or 'nobody yet'} must approve"
                return NextStep(
                    action="submit_release",
                    who=who,
                    needs_approval=policy.needs_approval,
                    approval_steps=policy.steps,
                    message=f"{found.requested_by.name} confirms (submits) it{then} "
                    f"({policy.reason})",
                )
            if state == "pending_approval":
                ticket = current_ticket(session, found.number)
                ids = eligible_approvers(session, ticket) if ticket is not None else []
                names = list(session.scalars(select(User.name).where(User.id.in_(ids))))
                group = ticket.current_group if ticket else None
                return NextStep(
                    action="approve_release",
                    who=sorted(names),
                    needs_approval=True,
                    message=f"waiting for approval by the {group} group: "
                    f"{', '.join(sorted(names)) or 'nobody is eligible yet'}",
                )
            if state == "approved":
                return NextStep(
                    action="apply_release",
                    who=[found.requested_by.name],
                    needs_approval=False,
                    message=f"approved: {found.requested_by.name} (or an approver) applies it",
                )
        if state in ("applying", "rolling_back"):
            return NextStep(action="wait", message=f"{release.id} is {state}; follow it live")
        return NextStep(action="none", message=f"{release.id} is {state}")

    @staticmethod
    def _approvers(session: Session, project_id: int, group: str) -> list[str]:
        query = select(User.name).where(approver_condition(User.id, project_id, group))
        return sorted(session.scalars(query))

    def _may_submit(self, actor: Actor, release: ReleaseRead) -> bool:
        with self.services.sessions() as session:
            found = load_release(session, release.id)
            return actor.can(Action.request, found.project_id) and (
                actor.user_id == found.requested_by_id or actor.is_admin
            )

    def _release(self, actor: Actor, rid: str) -> ReleaseRead:
        with self.services.sessions() as session:
            return get_release(session, actor=actor, release=rid)

    def _describe(self, release: ReleaseRead, verb: str) -> str:
        lines = [
            f"{verb.capitalize()} {release.id}: {release.project}/{release.environment} "
            f"({release.runtime}{', simulated' if release.simulated else ''}), "
            f"requested by {release.requested_by}, now {release.lifecycle_state}."
        ]
        if release.preview is not None:
            for service, fields in release.preview.diff.items():
                for name, change in fields.items():
                    lines.append(f"  {service}.{name}: {change.before} -> {change.after}")
            risk = release.preview.risk
            lines.append(f"Risk {risk.level} (tier {risk.tier}): {'; '.join(risk.reasons) or '-'}")
            lines.append(
                f"Preview expires {release.preview.expires_at.isoformat(timespec='seconds')}"
            )
        return "\n".join(lines)

    @staticmethod
    def _state(tool: str, release: ReleaseRead) -> str:
        diff_hash = release.preview.diff_hash if release.preview else ""
        return f"{tool}|{release.id}|{diff_hash}"

    def _url(self, rid: str | None) -> str | None:
        if self.console_url is None:
            return None
        return f"{self.console_url}/#/releases/{rid}" if rid else f"{self.console_url}/#/inbox"

    def _context(self, actor: Actor) -> ToolContext:
        return self.services.context(actor)

    def _audit(self, actor: Actor, ask: Ask, action: str, extra: dict[str, Any]) -> None:
        project = ask.args.get("project") if isinstance(ask.args.get("project"), str) else None
        rid = ask.args.get("release_id")
        if isinstance(rid, str):
            try:
                project = self._release(actor, rid).project
            except ShipdeckError:
                project = None
        with self.services.sessions() as session:
            record(
                session,
                actor=actor,
                action=action,
                project=project,
                data={"tool": ask.tool, "args": canonical_json(ask.args)[:2000], **extra},
            )
            session.commit()


def registry_tools() -> list[Tool[Any, Any]]:
    """The registry's tools, in registry order."""
    return list(REGISTRY.values())
