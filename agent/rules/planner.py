"""The rules planner: offline, deterministic, English and Chinese.

It finds an intent, the release ids, services (resolved to their project through the catalog),
versions, replica counts and the environment (with synonyms) in a message. Anything missing
or ambiguous becomes one clarifying question and no tool call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from agent.language import language_of, say
from agent.planner import Catalog, PlanContext, PlanResult, ToolCall
from agent.rules.vocabulary import ENVIRONMENT_SYNONYMS, INJECTION_MARKERS, INTENTS

RELEASE_ID = re.compile(r"(?<![a-z0-9])r-?(\d{1,9})(?![0-9])")
# A version needs a dot or a leading v (a bare number is a replica count); `svc:tag` is explicit.
VERSION = re.compile(
    r"(?<![\w.:/-])(v?\d+\.\d+(?:\.\d+){0,2}(?:[-+][0-9a-z][0-9a-z.-]*)?|v\d+)(?![\w.])"
)
TAGGED = re.compile(r"(?<![\w/-])([a-z0-9][a-z0-9_-]*):([a-z0-9_][a-z0-9_.-]*)")
REPLICAS = [
    re.compile(
        r"(?:to|=|到|为|成|至)\s*(\d{1,4})(?!\.\d)(?:\s*(?:replicas?|instances?|个|台|副本))?"
    ),
    re.compile(r"(\d{1,4})\s*(?:replicas?|instances?|copies|个副本|个实例|个|台|副本)"),
    re.compile(r"[x×]\s*(\d{1,4})\b"),
]
REASON = re.compile(r"(?:because|reason:?|since|因为|原因[:：]?|理由[:：]?)\s*(.+)$")
ENV_WORD = re.compile(r"(?:\bto|\bin|\bon|到|在)\s*([a-z][a-z0-9_-]{1,30})\s*$")
INTENT_WORDS = {w for _, words in INTENTS for w in words}
# Intents that act on releases named by id; with no id but a version and a service, the
# message is a change request ("deploy web 1.4.2 and approve it").
ID_INTENTS = ("approve", "reject", "cancel", "submit", "apply", "takeover", "timeline", "repreview")
RELEASE_ACTIONS = {*ID_INTENTS, "approvals", "releases", "status", "audit_log"}
MINE = re.compile(r"\b(?:my|mine|me)\b|我的|给我|我")


@dataclass
class Parsed:
    """What was found in one message."""

    text: str
    intent: str | None
    release_ids: list[str]
    environment: str | None
    environment_word: str | None
    projects: list[str]
    services: list[tuple[str, int]]
    versions: list[tuple[str, int]]
    tagged: dict[str, str] = field(default_factory=dict)
    injection: bool = False
    lang: str = "en"


def normalize(text: str) -> str:
    """Lowercase, full-width punctuation folded, spaces squeezed."""
    table = str.maketrans(
        {
            "，": " ",
            "。": " ",
            "：": ":",
            "；": " ",
            "！": " ",
            "？": " ",
            "（": " ",
            "）": " ",
            "、": " ",
            "“": " ",
            "”": " ",
        }
    )
    return re.sub(r"\s+", " ", text.translate(table).lower()).strip()


def _word(name: str) -> re.Pattern[str]:
    """Matches `name` not glued to other latin letters or digits (Chinese around it is fine)."""
    return re.compile(rf"(?<![a-z0-9_-]){re.escape(name)}(?![a-z0-9_-])")


def _has(text: str, phrase: str) -> bool:
    if phrase.isascii():
        return bool(_word(phrase).search(text)) or (" " in phrase and phrase in text)
    return phrase in text


class RulesPlanner:
    """Deterministic planner over regular expressions and the catalog."""

    name = "rules"

    def plan(self, text: str, context: PlanContext) -> PlanResult:
        """Plan the tool calls for one message (or ask one question)."""
        parsed = self.parse(text, context.catalog)
        result = self._dispatch(parsed, context)
        if parsed.injection and result.clarify is None:
            note = (
                "Previews and approvals cannot be skipped, whoever asks; "
                "I will follow the normal flow."
            )
            result.reply = f"{note} {result.reply}" if result.reply else note
        return result

    # ------------------------------------------------------------------ parsing

    def parse(self, text: str, catalog: Catalog) -> Parsed:
        """Find intent, ids, names, versions and environment in a message."""
        norm = normalize(text)
        ids = [f"R-{m.group(1)}" for m in RELEASE_ID.finditer(norm)]
        environment, word = self._environment(norm)
        projects = [p for p in catalog.services if _word(p).search(norm)]
        services: list[tuple[str, int]] = []
        all_services = sorted({s for names in catalog.services.values() for s in names})
        for name in all_services:
            services += [(name, m.start()) for m in _word(name).finditer(norm)]
        services.sort(key=lambda item: item[1])
        tagged = {
            m.group(1): m.group(2) for m in TAGGED.finditer(norm) if m.group(1) in all_services
        }
        versions = [(m.group(1), m.start()) for m in VERSION.finditer(norm)]
        return Parsed(
            text=norm,
            intent=self._intent(REASON.sub("", norm)),  # "because ..." names no intent
            release_ids=list(dict.fromkeys(ids)),
            environment=environment,
            environment_word=word,
            projects=projects,
            services=services,
            versions=versions,
            tagged=tagged,
            injection=any(marker in norm for marker in INJECTION_MARKERS),
            lang=language_of(text),
        )

    @staticmethod
    def _intent(text: str) -> str | None:
        for intent, words in INTENTS:
            if any(_has(text, w) for w in words):
                return intent
        return None

    @staticmethod
    def _environment(text: str) -> tuple[str | None, str | None]:
        found: list[tuple[int, str, str]] = []
        for environment, words in ENVIRONMENT_SYNONYMS.items():
            for w in sorted(words, key=len, reverse=True):
                match = _word(w).search(text) if w.isascii() else re.search(re.escape(w), text)
                if match:
                    found.append((match.start(), environment, w))
                    break
        if not found:
            return None, None
        found.sort()
        return found[-1][1], found[-1][2]  # "from staging to prod": the last one wins

    # ------------------------------------------------------------------ resolving

    def _project(self, parsed: Parsed, catalog: Catalog) -> tuple[str | None, str | None]:
        """The one project the message is about, or a question."""
        candidates = set(parsed.projects)
        for service, _ in parsed.services:
            owners = catalog.projects_of(service)
            if parsed.projects:
                continue
            if len(owners) > 1:
                return None, say(
                    "which_project_of_service",
                    parsed.lang,
                    service=service,
                    projects=", ".join(owners),
                )
            candidates.update(owners)
        if len(candidates) == 1:
            return candidates.pop(), None
        if len(candidates) > 1:
            return None, say(
                "several_projects", parsed.lang, projects=", ".join(sorted(candidates))
            )
        if len(catalog.services) == 1:
            return next(iter(catalog.services)), None
        return None, say("which_project", parsed.lang, projects=", ".join(sorted(catalog.services)))

    def _environment_of(
        self, parsed: Parsed, catalog: Catalog, project: str
    ) -> tuple[str | None, str | None]:
        known = catalog.environments.get(project, [])
        if parsed.environment is not None:
            if parsed.environment in known:
                return parsed.environment, None
            return None, say(
                "no_such_environment",
                parsed.lang,
                project=project,
                environment=parsed.environment_word,
                environments=", ".join(known),
            )
        if len(known) == 1:
            return known[0], None
        named = ENV_WORD.search(parsed.text)
        if named and named.group(1) not in INTENT_WORDS:
            return None, say(
                "no_such_environment",
                parsed.lang,
                project=project,
                environment=named.group(1),
                environments=", ".join(known),
            )
        return None, say(
            "which_environment", parsed.lang, project=project, environments=", ".join(known)
        )

    def _target(self, parsed: Parsed, catalog: Catalog) -> tuple[str, str] | str:
        project, question = self._project(parsed, catalog)
        if project is None:
            return question or say("help", parsed.lang)
        environment, question = self._environment_of(parsed, catalog, project)
        if environment is None:
            return question or say("help", parsed.lang)
        return project, environment

    # ------------------------------------------------------------------ intents

    def _dispatch(self, parsed: Parsed, context: PlanContext) -> PlanResult:
        catalog = context.catalog
        intent = parsed.intent
        ids = parsed.release_ids
        wants_change = bool(parsed.versions or parsed.tagged) and bool(parsed.services)
        if intent in RELEASE_ACTIONS and not ids and wants_change:
            # "deploy web 1.4.2 to prod and approve it": the change is the request; approving
            # (or skipping approval) is not something a message can do.
            intent = "deploy"
        if intent is None:
            if parsed.versions or parsed.tagged:
                intent = "deploy"
            elif ids:
                intent = "status"
            else:
                return PlanResult(clarify=say("help", parsed.lang))
        if intent == "audit_log":
            scope: dict[str, object] = {}
            if ids:
                scope["release_id"] = ids[0]
            elif len(parsed.projects) == 1:
                scope["project"] = parsed.projects[0]
            return _calls(ToolCall(tool="list_audit", args=scope))
        if intent == "verify_audit":
            return _calls(ToolCall(tool="verify_audit"), reply="Checking the audit chain.")
        if intent in ID_INTENTS:
            return self._on_releases(intent, parsed)
        if intent == "rollback":
            return self._rollback(parsed, catalog)
        if intent == "scale":
            return self._scale(parsed, catalog)
        if intent == "deploy":
            return self._deploy(parsed, catalog)
        if intent == "diagnose":
            return self._diagnose(parsed, catalog)
        if intent == "approvals":
            return self._approvals(parsed, catalog)
        if intent == "releases":
            args: dict[str, object] = {}
            project, _ = (
                self._project(parsed, catalog)
                if (parsed.projects or parsed.services)
                else (None, None)
            )
            if project:
                args["project"] = project
            if parsed.environment:
                args["environment"] = parsed.environment
            return _calls(ToolCall(tool="list_releases", args=args))
        if intent == "targets":
            args = {"project": parsed.projects[0]} if len(parsed.projects) == 1 else {}
            return _calls(ToolCall(tool="list_targets", args=args))
        return self._status(parsed, catalog)

    def _on_releases(self, intent: str, parsed: Parsed) -> PlanResult:
        ids = parsed.release_ids
        if not ids:
            example = {"approve": "approve R-42", "reject": "reject R-42 because ..."}.get(
                intent, f"{intent} R-42"
            )
            return PlanResult(clarify=say("which_release", parsed.lang, example=example))
        reason_match = REASON.search(parsed.text)
        reason = reason_match.group(1).strip() if reason_match else None
        if intent == "approve":
            if len(ids) > 1:
                return _calls(ToolCall(tool="approve_releases", args={"release_ids": ids}))
            return _calls(ToolCall(tool="approve_release", args={"release_id": ids[0]}))
        if intent == "reject":
            if len(ids) > 1:
                args: dict[str, object] = {
                    "release_ids": ids,
                    **({"reason": reason} if reason else {}),
                }
                return _calls(ToolCall(tool="reject_releases", args=args))
            args = {"release_id": ids[0], **({"reason": reason} if reason else {})}
            return _calls(ToolCall(tool="reject_release", args=args))
        tool = {
            "cancel": "cancel_release",
            "submit": "submit_release",
            "apply": "apply_release",
            "takeover": "takeover_approval",
            "timeline": "release_timeline",
            "repreview": "repreview_release",
        }[intent]
        calls = []
        for release_id in ids:
            args = {"release_id": release_id}
            if intent == "cancel" and reason:
                args["reason"] = reason
            calls.append(ToolCall(tool=tool, args=args))
        return PlanResult(calls=calls)

    def _rollback(self, parsed: Parsed, catalog: Catalog) -> PlanResult:
        target = self._target(parsed, catalog)
        if isinstance(target, str):
            return PlanResult(clarify=target)
        args: dict[str, object] = {"project": target[0], "environment": target[1]}
        if parsed.release_ids:
            args["to_release_id"] = parsed.release_ids[0]
        return _calls(ToolCall(tool="rollback_release", args=args))

    def _scale(self, parsed: Parsed, catalog: Catalog) -> PlanResult:
        if not parsed.services:
            return PlanResult(clarify=say("which_service_scale", parsed.lang))
        replicas = next(
            (int(m.group(1)) for pattern in REPLICAS for m in [pattern.search(parsed.text)] if m),
            None,
        )
        if replicas is None:
            return PlanResult(clarify=say("how_many", parsed.lang))
        target = self._target(parsed, catalog)
        if isinstance(target, str):
            return PlanResult(clarify=target)
        known = catalog.services[target[0]]
        names = [s for s, _ in parsed.services if s in known]
        changes = {name: {"replicas": replicas} for name in dict.fromkeys(names)}
        return _preview(target, changes)

    def _deploy(self, parsed: Parsed, catalog: Catalog) -> PlanResult:
        if not parsed.services:
            unknown = re.search(r"([a-z][a-z0-9_-]*)\s*[: ]\s*v?\d", parsed.text)
            ignore = {w for _, words in INTENTS for w in words} | {"to", "version", "at", "of"}
            if unknown and unknown.group(1) not in ignore:
                return PlanResult(
                    clarify=say(
                        "unknown_service",
                        parsed.lang,
                        service=unknown.group(1),
                        services=_known(catalog),
                    )
                )
            return PlanResult(
                clarify=say("which_service_deploy", parsed.lang, services=_known(catalog))
            )
        target = self._target(parsed, catalog)
        if isinstance(target, str):
            return PlanResult(clarify=target)
        known = catalog.services[target[0]]
        mentioned = [(s, pos) for s, pos in parsed.services if s in known]
        versions = _pair_versions(mentioned, parsed.versions, parsed.tagged)
        if not versions:
            names = ", ".join(s for s, _ in mentioned)
            return PlanResult(clarify=say("which_version", parsed.lang, services=names))
        changes = {name: {"image_tag": tag} for name, tag in versions.items()}
        return _preview(target, changes)

    def _diagnose(self, parsed: Parsed, catalog: Catalog) -> PlanResult:
        target = self._target(parsed, catalog)
        if isinstance(target, str):
            return PlanResult(clarify=target)
        args: dict[str, object] = {"project": target[0], "environment": target[1]}
        if len(parsed.services) == 1:
            args["service"] = parsed.services[0][0]
        return _calls(ToolCall(tool="diagnose_target", args=args))

    def _approvals(self, parsed: Parsed, catalog: Catalog) -> PlanResult:
        args: dict[str, object] = {"state": "pending"}
        if MINE.search(parsed.text):
            args["mine"] = True
        if len(parsed.projects) == 1:
            args["project"] = parsed.projects[0]
        if parsed.environment:
            args["environment"] = parsed.environment
        return _calls(ToolCall(tool="list_approvals", args=args))

    def _status(self, parsed: Parsed, catalog: Catalog) -> PlanResult:
        if parsed.release_ids:
            return PlanResult(
                calls=[
                    ToolCall(tool="get_release", args={"release_id": r}) for r in parsed.release_ids
                ]
            )
        if not (parsed.projects or parsed.services or parsed.environment):
            return _calls(ToolCall(tool="list_targets"))
        target = self._target(parsed, catalog)
        if isinstance(target, str):
            return PlanResult(clarify=target)
        return _calls(
            ToolCall(tool="target_status", args={"project": target[0], "environment": target[1]})
        )


def _pair_versions(
    services: list[tuple[str, int]], versions: list[tuple[str, int]], tagged: dict[str, str]
) -> dict[str, str]:
    """Give each service the version written after it (or the only version, to all)."""
    result: dict[str, str] = {name: tag for name, tag in tagged.items() if name in dict(services)}
    free = [(v, pos) for v, pos in versions if not any(v == tag for tag in tagged.values())]
    untagged = [(s, pos) for s, pos in services if s not in result]
    if len(free) == 1 and untagged:
        for name, _ in untagged:
            result[name] = free[0][0]
        return result
    for version, position in free:
        before = [s for s, pos in untagged if pos < position and s not in result]
        if before:
            result[before[-1]] = version
    return result


def _known(catalog: Catalog) -> str:
    return ", ".join(sorted({s for services in catalog.services.values() for s in services}))


def _calls(call: ToolCall, reply: str | None = None) -> PlanResult:
    return PlanResult(calls=[call], reply=reply)


def _preview(target: tuple[str, str], changes: dict[str, dict[str, Any]]) -> PlanResult:
    args = {"project": target[0], "environment": target[1], "changes": changes}
    return _calls(ToolCall(tool="preview_release", args=args))
