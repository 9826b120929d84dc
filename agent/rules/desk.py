"""Handlers of the release desk's intents: retry, promote, freeze, unfreeze, what is frozen."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from agent.language import say
from agent.planner import PlanResult, ToolCall
from agent.rules.handlers import Handler, Request, _ids_or_ask, deploy
from agent.rules.resolve import Question, env_in, environment, project
from agent.rules.when import parse_when
from core.db import utcnow

# What may separate a freeze's reason from the rest: "— incident 42", ": db migration".
REASON_SEPARATOR = re.compile(r"\s[—–-]{1,2}\s*|[—–]\s*|:(?!\d)\s*|\bfor reason\b\s*")


def retry(req: Request) -> PlanResult:
    """retry_release for each failed release named."""
    return PlanResult(
        calls=[
            ToolCall(tool="retry_release", args={"release_id": release})
            for release in _ids_or_ask(req, "retry R-42")
        ]
    )


def promote(req: Request) -> PlanResult:
    """promote_release: from the environment named after "from" (else the one before the
    destination in the project's promotion order) to the one named; else a question."""
    parsed = req.parsed
    if parsed.versions or parsed.tagged:
        return deploy(replace(req, parsed=replace(parsed, source_environment=None)))
    catalog = req.catalog
    services = list(dict.fromkeys(s for s, _ in parsed.services))
    name = project(parsed, catalog)
    known = catalog.environments.get(name, [])
    order = catalog.promotion.get(name, [])
    source = env_in(known, parsed.source_environment) if parsed.source_environment else None
    wanted = [e for e in parsed.environments if env_in(known, e) != source]
    if wanted:
        destination = environment(replace(parsed, environments=wanted[-1:]), catalog, name)
    elif source in order and order.index(source) + 1 < len(order):
        destination = order[order.index(source) + 1]
    else:
        raise Question(
            say("promote_to_where", req.lang, project=name, environments=", ".join(known))
        )
    if source is None and destination in order and order.index(destination) > 0:
        source = order[order.index(destination) - 1]
    if source is None:
        others = ", ".join(e for e in known if e != destination)
        what = " ".join(services) or name
        raise Question(
            say(
                "promote_from_where",
                req.lang,
                what=what,
                destination=destination,
                environments=others,
            )
        )
    args: dict[str, Any] = {
        "project": name,
        "from_environment": source,
        "to_environment": destination,
    }
    own = [s for s in services if s in catalog.services.get(name, [])]
    if own:
        args["services"] = own
    return PlanResult(calls=[ToolCall(tool="promote_release", args=args)])


def _reason(req: Request, after: int) -> str | None:
    """The freeze's reason: after a reason word, else after a dash or colon, else quoted."""
    parsed = req.parsed
    if parsed.reason and not parsed.release_ids:
        return parsed.reason
    raw = parsed.raw
    separators = [m for m in REASON_SEPARATOR.finditer(raw) if m.start() >= min(after, len(raw))]
    separators = separators or list(REASON_SEPARATOR.finditer(raw))
    for match in separators:
        text = raw[match.end() :].strip(" ,.;:-—–")
        if text and not re.fullmatch(r"\d{1,2}(?::\d{2})?", text):
            return text[:500]
    return None


def _freeze_scope(req: Request) -> tuple[str, str | None]:
    """The project and environment (None: all of them) a freeze request names."""
    parsed, catalog = req.parsed, req.catalog
    name = project(parsed, catalog)
    if not parsed.environments and not parsed.unknown_environment:
        return name, None
    return name, environment(parsed, catalog, name)


def freeze(req: Request) -> PlanResult:
    """declare_freeze of the target named, until the time written, with the reason."""
    parsed, zone = req.parsed, req.context.timezone
    name, env = _freeze_scope(req)
    when = parse_when(parsed.text, zone, req.context.now or utcnow())
    reason = _reason(req, when.span[1] if when else 0)
    where = f"{name}/{env}" if env else name
    if when is None or reason is None:
        missing = [
            say("freeze_needs_until", req.lang, zone=zone) if when is None else "",
            say("freeze_needs_reason", req.lang) if reason is None else "",
        ]
        raise Question(
            say("freeze_missing", req.lang, where=where, missing=" ".join(m for m in missing if m))
        )
    args: dict[str, Any] = {"project": name}
    if env:
        args["environment"] = env
    args.update(when.args())
    args["reason"] = reason
    return PlanResult(calls=[ToolCall(tool="declare_freeze", args=args)])


def unfreeze(req: Request) -> PlanResult:
    """lift_freeze of the target named; "unfreeze prod" in several projects: the frozen ones."""
    parsed = req.parsed
    try:
        scopes = [_freeze_scope(req)]
    except Question:
        scopes = _frozen_scopes(req)
        if not scopes:
            raise
    else:
        if scopes[0][1] is None and not parsed.environments:
            scopes = _frozen_scopes(req, scopes[0][0]) or scopes
    calls = []
    for name, env in scopes:
        args: dict[str, Any] = {"project": name}
        if env is not None:
            args["environment"] = env
        calls.append(ToolCall(tool="lift_freeze", args=args))
    return PlanResult(calls=calls)


def _frozen_scopes(req: Request, only: str | None = None) -> list[tuple[str, str | None]]:
    """The (project, environment) freezes in force that the request can mean, read now."""
    if req.context.run_read is None:
        return []
    args = {"project": only} if only else {}
    data = req.context.run_read(ToolCall(tool="list_freezes", args=args))
    items = data.get("items", []) if isinstance(data, dict) else []
    wanted = req.parsed.environments
    scopes: list[tuple[str, str | None]] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        env = item.get("environment")
        if wanted and not (env and env_in([env], wanted[0])):
            continue
        scope = (str(item.get("project")), str(env) if env else None)
        if scope not in scopes:
            scopes.append(scope)
    return scopes


def freezes(req: Request) -> PlanResult:
    """list_freezes, of one project when one is named."""
    parsed = req.parsed
    args = {"project": parsed.projects[0]} if len(parsed.projects) == 1 else {}
    return PlanResult(calls=[ToolCall(tool="list_freezes", args=args)])


DESK_HANDLERS: dict[str, Handler] = {
    "retry": retry,
    "promote": promote,
    "freeze": freeze,
    "unfreeze": unfreeze,
    "freezes": freezes,
}
