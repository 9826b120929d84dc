"""One handler per intent: a parsed request in, tool calls (or a Question) out."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from agent.language import say
from agent.planner import Catalog, PlanContext, PlanResult, ToolCall
from agent.rules.function_words import STOPWORDS
from agent.rules.parse import Parsed
from agent.rules.resolve import Question, closest, env_in, known_services, project, targets
from agent.rules.vocabulary import INTENTS
from tools.registry import REGISTRY

INTENT_WORDS = {w for _, words in INTENTS for w in words}
BARE_VERSION = re.compile(r"(?:version|版本|\bto|到)\s*v?(\d{1,4})(?![\d.])")


@dataclass
class Request:
    """A parsed request and what it may use."""

    parsed: Parsed
    context: PlanContext

    @property
    def catalog(self) -> Catalog:
        """The caller's catalog."""
        return self.context.catalog

    @property
    def lang(self) -> str:
        """The language to answer in."""
        return self.parsed.lang


Handler = Callable[[Request], PlanResult]


def _calls(*calls: ToolCall, reply: str | None = None) -> PlanResult:
    return PlanResult(calls=list(calls), reply=reply)


EXAMPLES_ZH = {
    "approve": "批准 R-42",
    "reject": "拒绝 R-42 因为 ...",
    "cancel": "取消 R-42",
    "submit": "提交 R-42",
    "apply": "执行 R-42",
    "take": "接管 R-42",
    "re-preview": "重新预览 R-42",
    "timeline": "R-42 的时间线",
    "retry": "重试 R-42",
}


# Where the releases a question offers come from, per verb.
CHOICES: dict[str, ToolCall] = {
    "approve": ToolCall(tool="list_approvals", args={"state": "pending", "limit": 5}),
    "reject": ToolCall(tool="list_approvals", args={"state": "pending", "limit": 5}),
    "take": ToolCall(tool="list_approvals", args={"state": "pending", "limit": 5}),
    "submit": ToolCall(tool="list_releases", args={"state": "previewed", "limit": 5}),
    "apply": ToolCall(tool="list_releases", args={"state": "approved", "limit": 5}),
    "re-preview": ToolCall(tool="list_releases", args={"state": "previewed", "limit": 5}),
    "retry": ToolCall(tool="list_releases", args={"state": "failed", "limit": 5}),
}


def _ids_or_ask(req: Request, example: str) -> list[str]:
    if not req.parsed.release_ids:
        verb = example.split()[0]
        if req.lang == "zh":
            example = EXAMPLES_ZH.get(verb, example)
        question = say("which_release", req.lang, example=example)
        choices = _choices(req, verb)
        raise Question(f"{question} {choices}" if choices else question)
    return req.parsed.release_ids


def _choices(req: Request, verb: str) -> str:
    """The releases the user can mean, read now: "Open: R-1 (shop/prod), R-2 (...)"."""
    call = CHOICES.get(verb)
    if call is None or req.context.run_read is None:
        return ""
    data = req.context.run_read(call)
    items = data.get("items", []) if isinstance(data, dict) else []
    named = [
        f"{i.get('release_id') or i.get('id')} ({i.get('project')}/{i.get('environment')})"
        for i in items
        if isinstance(i, dict)
    ]
    return say("choices", req.lang, releases=", ".join(named)) if named else ""


def approve(req: Request) -> PlanResult:
    """approve_release, or approve_releases for several ids; a comment is kept."""
    ids = _ids_or_ask(req, "approve R-42")
    comment = req.parsed.comment
    if comment is None and req.parsed.trigger == "lgtm":
        comment = "lgtm"
    extra = {"comment": comment} if comment else {}
    if len(ids) > 1:
        return _calls(ToolCall(tool="approve_releases", args={"release_ids": ids, **extra}))
    return _calls(ToolCall(tool="approve_release", args={"release_id": ids[0], **extra}))


def reject(req: Request) -> PlanResult:
    """reject_release(s) with the reason, however it was written."""
    ids = _ids_or_ask(req, "reject R-42 because ...")
    extra = {"reason": req.parsed.reason} if req.parsed.reason else {}
    if len(ids) > 1:
        return _calls(ToolCall(tool="reject_releases", args={"release_ids": ids, **extra}))
    return _calls(ToolCall(tool="reject_release", args={"release_id": ids[0], **extra}))


def _per_release(tool: str, example: str, reason: bool = False) -> Handler:
    def handle(req: Request) -> PlanResult:
        calls = []
        for release in _ids_or_ask(req, example):
            args: dict[str, Any] = {"release_id": release}
            if reason and req.parsed.reason:
                args["reason"] = req.parsed.reason
            calls.append(ToolCall(tool=tool, args=args))
        return PlanResult(calls=calls)

    handle.__doc__ = f"{tool} for each release named."
    return handle


TO_RELEASE = re.compile(r"(?:\bto|back to|到|至|为)\s*(?:release\s*)?r-?\d")


def rollback(req: Request) -> PlanResult:
    """rollback_release of the target named; the services asked for when the tool takes them.

    "to R-3" is where to go back to; "roll back R-5" alone means R-5's target.
    """
    parsed = req.parsed
    services = [s for s, _ in parsed.services]
    going_to = bool(TO_RELEASE.search(parsed.text))
    if parsed.release_ids and not going_to and not (parsed.services or parsed.projects):
        where = _release_target(req, parsed.release_ids[0])
        if where:
            parsed = replace(parsed, projects=[where[0]], environments=[where[1]])
    calls = []
    for name, env in targets(parsed, req.catalog):
        args: dict[str, Any] = {"project": name, "environment": env}
        if parsed.release_ids and going_to:
            args["to_release_id"] = parsed.release_ids[0]
        own = [s for s in dict.fromkeys(services) if s in req.catalog.services[name]]
        if own and "services" in REGISTRY["rollback_release"].input_model.model_fields:
            args["services"] = own
        if parsed.emergency:
            args["emergency"] = True
        calls.append(ToolCall(tool="rollback_release", args=args))
    return PlanResult(calls=calls)


def _pair(
    services: list[tuple[str, int]], values: list[tuple[Any, int]], given: dict[str, Any]
) -> dict[str, Any]:
    """Give each service the value written after it (the only value goes to all)."""
    result = {name: v for name, v in given.items() if name in dict(services)}
    untagged = [(s, pos) for s, pos in services if s not in result]
    free = [(v, pos) for v, pos in values if v not in given.values()]
    if len(free) == 1 and untagged:
        return {**result, **{name: free[0][0] for name, _ in untagged}}
    for value, position in free:
        before = [s for s, pos in untagged if pos < position and s not in result]
        if before:
            result[before[-1]] = value
    return result


def _ask_service(req: Request, key: str) -> PlanResult:
    parsed = req.parsed
    unknown = re.search(r"([a-z][a-z0-9_-]*)\s*[: ]\s*v?\d", parsed.text)
    ignore = INTENT_WORDS | STOPWORDS | {"x"}
    offered = known_services(req.catalog, parsed.projects or None)
    if unknown and unknown.group(1) not in ignore and key == "which_service_deploy":
        word = unknown.group(1)
        guess = closest(word, sorted({s for ns in req.catalog.services.values() for s in ns}))
        question = say("unknown_service", parsed.lang, service=word, services=offered)
        if guess:
            question += " " + say("did_you_mean", parsed.lang, name=guess)
        raise Question(question)
    raise Question(say(key, parsed.lang, services=offered))


def _services_in(req: Request, name: str) -> list[tuple[str, int]]:
    return [(s, pos) for s, pos in req.parsed.services if s in req.catalog.services[name]]


def deploy(req: Request) -> PlanResult:
    """preview_release with image tags, one per environment named."""
    parsed = req.parsed
    if not parsed.services:
        return _ask_service(req, "which_service_deploy")
    if parsed.replicas and not (parsed.versions or parsed.tagged):
        return scale(req)  # "set worker to 3 replicas", "把 worker 调到 3 个"
    calls = []
    for name, env in targets(parsed, req.catalog):
        mentioned = _services_in(req, name)
        versions = _pair(mentioned, parsed.versions, parsed.tagged)
        if not versions and not parsed.replicas:
            bare = BARE_VERSION.search(parsed.text)
            if bare:
                versions = {s: bare.group(1) for s, _ in mentioned}
            else:  # "deploy web 2 to staging": a number right after the service is its tag
                versions = {s: str(n) for s, n in _right_after(parsed, mentioned).items()}
        if not versions:
            names = ", ".join(dict.fromkeys(s for s, _ in mentioned))
            raise Question(say("which_version", parsed.lang, services=names))
        changes = {svc: {"image_tag": tag} for svc, tag in versions.items()}
        calls.append(_preview(name, env, changes, parsed.emergency))
    return PlanResult(calls=calls)


def scale(req: Request) -> PlanResult:
    """preview_release with replica counts."""
    parsed = req.parsed
    if not parsed.services:
        return _ask_service(req, "which_service_scale")
    if not parsed.replicas and _right_after(parsed, parsed.services):
        counts = _right_after(parsed, parsed.services)  # "scale web 2 in prod"
        parsed = replace(parsed, replicas=[(n, 0) for n in counts.values()][:1])
    if not parsed.replicas:
        names = ", ".join(dict.fromkeys(s for s, _ in parsed.services))
        raise Question(say("how_many", parsed.lang, services=names))
    calls = []
    for name, env in targets(parsed, req.catalog):
        counts = _pair(_services_in(req, name), parsed.replicas, {})
        changes = {svc: {"replicas": n} for svc, n in counts.items()}
        calls.append(_preview(name, env, changes, parsed.emergency))
    return PlanResult(calls=calls)


def _right_after(parsed: Parsed, services: list[tuple[str, int]]) -> dict[str, int]:
    """A bare number written right after a service name."""
    found = {}
    for name, position in services:
        match = re.compile(r"[\w-]*\s+v?(\d{1,4})(?![\d.\w])").match(parsed.text, position)
        if match:
            found[name] = int(match.group(1))
    return found


def _preview(name: str, env: str, changes: dict[str, Any], emergency: bool) -> ToolCall:
    args: dict[str, Any] = {"project": name, "environment": env, "changes": changes}
    if emergency:
        args["emergency"] = True
    return ToolCall(tool="preview_release", args=args)


def diagnose(req: Request) -> PlanResult:
    """diagnose_target; for a release id, the release (its stored reason) and its target's logs."""
    parsed = req.parsed
    if parsed.release_ids and not (parsed.services or parsed.projects):
        return _release_failure(req)
    calls = []
    for name, env in _targets_or_everywhere(req):
        args: dict[str, Any] = {"project": name, "environment": env}
        own = list(dict.fromkeys(s for s, _ in _services_in(req, name)))
        if len(own) == 1:
            args["service"] = own[0]
        calls.append(ToolCall(tool="diagnose_target", args=args))
    return PlanResult(calls=calls)


def _release_target(req: Request, release: str) -> tuple[str, str] | None:
    """The (project, environment) of a release, read now."""
    if req.context.run_read is None:
        return None
    data = req.context.run_read(ToolCall(tool="get_release", args={"release_id": release}))
    if isinstance(data, dict) and "project" in data and "environment" in data:
        return str(data["project"]), str(data["environment"])
    return None


def _release_failure(req: Request) -> PlanResult:
    release = req.parsed.release_ids[0]
    calls = [ToolCall(tool="get_release", args={"release_id": release})]
    if req.context.run_read is None:
        return PlanResult(calls=calls)
    data = req.context.run_read(calls[0])
    if not isinstance(data, dict) or "project" not in data:
        return PlanResult(calls=calls)
    calls.append(
        ToolCall(
            tool="diagnose_target",
            args={"project": data["project"], "environment": data["environment"]},
        )
    )
    reply = None
    if data.get("reason"):
        reply = say(
            "failed_because",
            req.lang,
            release=release,
            state=data.get("lifecycle_state"),
            reason=data["reason"],
        )
    return PlanResult(calls=calls, reply=reply)


def approvals(req: Request) -> PlanResult:
    """list_approvals: pending ones, mine when the message says so."""
    parsed = req.parsed
    args: dict[str, Any] = {"state": "pending"}
    if parsed.mine:
        args["mine"] = True
    if len(parsed.projects) == 1:
        args["project"] = parsed.projects[0]
    if parsed.environments:
        args["environment"] = parsed.environments[-1]
    return _calls(ToolCall(tool="list_approvals", args=args))


def releases(req: Request) -> PlanResult:
    """list_releases, or a release's timeline when one is named ("history of R-3")."""
    parsed = req.parsed
    if parsed.release_ids:
        return timeline(req)
    args: dict[str, Any] = {}
    if parsed.projects or parsed.services:
        try:
            args["project"] = project(parsed, req.catalog)
        except Question:
            pass
    if parsed.environments:
        args["environment"] = parsed.environments[-1]
    if parsed.state:
        args["state"] = parsed.state
    return _calls(ToolCall(tool="list_releases", args=args))


def timeline(req: Request) -> PlanResult:
    """release_timeline of each release named."""
    ids = _ids_or_ask(req, "timeline of R-42")
    return PlanResult(
        calls=[ToolCall(tool="release_timeline", args={"release_id": r}) for r in ids]
    )


def list_targets(req: Request) -> PlanResult:
    """list_targets, of one project when one is named."""
    parsed = req.parsed
    args = {"project": parsed.projects[0]} if len(parsed.projects) == 1 else {}
    return _calls(ToolCall(tool="list_targets", args=args))


def _targets_or_everywhere(req: Request) -> list[tuple[str, str]]:
    """The targets named; an environment alone ("is prod healthy?") is every project's."""
    parsed, catalog = req.parsed, req.catalog
    if parsed.environments and not (parsed.projects or parsed.services):
        having = [
            (p, own)
            for p in sorted(catalog.services)
            for e in parsed.environments
            if (own := env_in(catalog.environments[p], e))
        ]
        if having:
            return having
    return targets(parsed, catalog)


def status(req: Request) -> PlanResult:
    """get_release for ids; target_status for a target ("is prod healthy?": every project's)."""
    parsed = req.parsed
    if parsed.release_ids:
        return PlanResult(
            calls=[ToolCall(tool="get_release", args={"release_id": r}) for r in parsed.release_ids]
        )
    if not (parsed.projects or parsed.services or parsed.environments):
        return _calls(ToolCall(tool="list_targets"))
    return PlanResult(
        calls=[
            ToolCall(tool="target_status", args={"project": p, "environment": e})
            for p, e in _targets_or_everywhere(req)
        ]
    )


def audit_log(req: Request) -> PlanResult:
    """list_audit of a release or a project."""
    parsed = req.parsed
    scope: dict[str, Any] = {}
    if parsed.release_ids:
        scope["release_id"] = parsed.release_ids[0]
    elif len(parsed.projects) == 1:
        scope["project"] = parsed.projects[0]
    return _calls(ToolCall(tool="list_audit", args=scope))


def verify_audit(req: Request) -> PlanResult:
    """verify_audit: check the hash chain."""
    return _calls(ToolCall(tool="verify_audit"), reply=None)


HANDLERS: dict[str, Handler] = {
    "approve": approve,
    "reject": reject,
    "cancel": _per_release("cancel_release", "cancel R-42", reason=True),
    "submit": _per_release("submit_release", "submit R-42"),
    "apply": _per_release("apply_release", "apply R-42"),
    "takeover": _per_release("takeover_approval", "take over R-42"),
    "repreview": _per_release("repreview_release", "re-preview R-42"),
    "timeline": timeline,
    "rollback": rollback,
    "deploy": deploy,
    "scale": scale,
    "diagnose": diagnose,
    "approvals": approvals,
    "releases": releases,
    "targets": list_targets,
    "status": status,
    "audit_log": audit_log,
    "verify_audit": verify_audit,
}
