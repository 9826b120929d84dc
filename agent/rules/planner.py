"""The rules planner: offline, deterministic, English and Chinese.

A message is parsed (`parse`: quoted text set aside, clauses, intents, values), resolved
against the caller's catalog (`resolve`) and handled per intent (`handlers`). Two requests in
one message make two sets of calls; "same for staging", "roll it back" and "yes" refer to what
was just said. Anything missing becomes one question naming it, and no tool call.
"""

from __future__ import annotations

import re
from dataclasses import replace

from rapidfuzz.distance import DamerauLevenshtein

from agent.language import say
from agent.planner import Catalog, PlanContext, PlanResult
from agent.rules.desk import DESK_HANDLERS
from agent.rules.function_words import STOPWORDS
from agent.rules.handlers import HANDLERS, Request
from agent.rules.message import Message, split_quotes
from agent.rules.parse import (
    RELEASE_ID,
    Clause,
    Parsed,
    clauses,
    detect,
    parse,
)
from agent.rules.resolve import Question, names_of
from tools.registry import REGISTRY

ID_ACTIONS = {"approve", "reject", "cancel", "submit", "apply", "takeover", "repreview", "retry"}
CHANGES = {"deploy", "scale", "rollback"}
ALL_HANDLERS = {**HANDLERS, **DESK_HANDLERS}
LATIN = re.compile(r"[a-z][a-z0-9_-]+")
DID_YOU_MEAN = re.compile(r"Did you mean (\S+)\?|你是指 (\S+) 吗")
EARLIER_KEPT = 1024  # previous messages remembered (one per active conversation)


class RulesPlanner:
    """Deterministic planner over a small grammar, a vocabulary and the catalog."""

    name = "rules"

    def __init__(self, max_cards: int = 5) -> None:
        self.max_cards = max_cards
        # The last request of a previous message, by (its text, user), with the catalog it was
        # read against: every message re-read the one before it (a third of planning).
        self._earlier: dict[tuple[str, str], tuple[Catalog, Parsed | None]] = {}

    def plan(self, text: str, context: PlanContext) -> PlanResult:
        """Plan the tool calls for one message (or ask one question)."""
        message = split_quotes(text)
        if context.lang:
            message.lang = context.lang
        try:
            result = self._plan(message, context)
        except Question as question:
            return PlanResult(clarify=str(question))
        notes = []
        if message.injection:
            notes.append(say("injection", message.lang))
        if any(detect(Clause(raw=q, text=q.lower())).intent for q in message.quoted):
            notes.append(say("quoted_ignored", message.lang))
        if notes:
            result.reply = " ".join([*notes, *([result.reply] if result.reply else [])])
        return result

    def requests(self, message: Message, context: PlanContext) -> list[Parsed]:
        """The requests a message makes, with references to earlier ones filled in."""
        names = names_of(context.catalog)
        found = [parse(c, message, names) for c in clauses(message, names)]
        if found and all(p.go_ahead and p.intent is None for p in found):
            return self._go_ahead(message, context)
        out: list[Parsed] = []
        for parsed in found:
            earlier = out[-1] if out else self._previous(context)
            out.extend(self._refer(parsed, earlier, bool(out), message))
        return out

    def _plan(self, message: Message, context: PlanContext) -> PlanResult:
        requests = self.requests(message, context)
        if not any(r.intent for r in requests):
            if any(r.negated for r in requests):
                return PlanResult(reply=say("nothing_done", message.lang))
            return PlanResult(clarify=say("help", message.lang))
        result = PlanResult()
        replies = []
        touched: set[str] = set()
        for parsed in requests:
            if parsed.intent is None:
                continue
            if parsed.intent == "apply" and touched & set(parsed.release_ids):
                # "approve R-2 and apply it": applying waits for the approval (a card nobody
                # has confirmed yet); it is never chained behind it in one message.
                replies.append(say("apply_later", message.lang))
                continue
            if parsed.intent in ID_ACTIONS:
                touched.update(parsed.release_ids)
            intent = parsed.intent
            if (
                intent == "deploy"
                and parsed.source_environment
                and not (parsed.versions or parsed.tagged or parsed.replicas)
            ):
                # "move web from staging to prod", "把 web 从预发推到生产": what runs there, here
                intent = "promote"
                parsed = replace(parsed, intent=intent)
            planned = ALL_HANDLERS[intent](Request(parsed, context))
            result.calls += planned.calls
            if planned.reply:
                replies.append(planned.reply)
        cards = [c for c in result.calls if REGISTRY[c.tool].mutating]
        if len(cards) > self.max_cards:
            extra = {id(c) for c in cards[self.max_cards :]}
            result.calls = [c for c in result.calls if id(c) not in extra]
            replies.append(say("too_many_cards", message.lang, count=self.max_cards))
        result.reply = " ".join(replies) or None
        return result

    def _go_ahead(self, message: Message, context: PlanContext) -> list[Parsed]:
        """ "yes" to "Did you mean web?" is the previous request with web; else, the cards."""
        said = [m["content"] for m in context.history if m["role"] == "assistant"]
        asked = [m["content"] for m in context.history if m["role"] == "user"]
        suggestion = DID_YOU_MEAN.search(said[-1]) if said else None
        if suggestion is None or not asked:
            raise Question(say("nothing_to_confirm", message.lang))
        meant = suggestion.group(1) or suggestion.group(2)
        words = LATIN.findall(asked[-1].lower())
        typo = min(
            (w for w in words if w != meant),
            key=lambda w: DamerauLevenshtein.distance(w, meant),
            default=None,
        )
        if typo is None:
            raise Question(say("nothing_to_confirm", message.lang))
        fixed = re.sub(rf"(?<![a-z0-9-]){re.escape(typo)}(?![a-z0-9-])", meant, asked[-1].lower())
        earlier = PlanContext(catalog=context.catalog, user=context.user)
        return self.requests(split_quotes(fixed), earlier)

    def _previous(self, context: PlanContext) -> Parsed | None:
        """The last request of the user's previous message, if it made one."""
        last = next((m for m in reversed(context.history) if m["role"] == "user"), None)
        if last is None:
            return None
        key = (last["content"], context.user)
        known = self._earlier.get(key)
        if known is not None and known[0] == context.catalog:
            return known[1]
        earlier = PlanContext(catalog=context.catalog, user=context.user)
        with_intent = [r for r in self.requests(split_quotes(last["content"]), earlier) if r.intent]
        found = with_intent[-1] if with_intent else None
        if len(self._earlier) >= EARLIER_KEPT:
            self._earlier.clear()
        self._earlier[key] = (context.catalog, found)
        return found

    def _refer(
        self, parsed: Parsed, earlier: Parsed | None, same_message: bool, message: Message
    ) -> list[Parsed]:
        """Resolve "same for staging", "roll it back", "yes" against the earlier request."""
        if parsed.intent is None:
            if parsed.negated or parsed.go_ahead:
                return [parsed]
            if earlier is not None and parsed.same_as_before:
                return [_repeat(earlier, parsed)]
            if parsed.same_as_before:
                raise Question(say("same_as_what", parsed.lang))
            inferred = _infer(parsed, message)
            if (
                inferred.intent is None
                and earlier is not None
                and not same_message
                and _names_something(parsed)
            ):
                return [_answer(earlier, parsed)]  # "staging", answering "which environment?"
            return [inferred]
        if parsed.intent in ID_ACTIONS and not parsed.release_ids:
            change = _infer(replace(parsed, intent=None), message)
            if change.intent in CHANGES:  # "preview web 1.5.0 in prod": a change request
                return [change]
        if earlier is None:
            return [parsed]
        if parsed.intent in ID_ACTIONS and not parsed.release_ids:
            if same_message and earlier.intent in CHANGES:
                # "deploy web 1.4.2 and approve it": the release does not exist yet; the
                # change is the request, its approval comes later and from someone else.
                return []
            if parsed.pronoun or not same_message:
                return [replace(parsed, release_ids=earlier.release_ids)]
        if parsed.same_as_before:
            return [_repeat(replace(earlier, intent=parsed.intent), parsed)]
        if parsed.pronoun:
            return [_complete(parsed, earlier)]
        return [parsed]


def _repeat(earlier: Parsed, current: Parsed) -> Parsed:
    """The earlier request again, with whatever the current one names instead."""
    return replace(
        earlier,
        environments=current.environments or earlier.environments,
        services=current.services or earlier.services,
        projects=current.projects or earlier.projects,
        versions=current.versions or earlier.versions,
        tagged=current.tagged or earlier.tagged,
        replicas=current.replicas or earlier.replicas,
        release_ids=current.release_ids or earlier.release_ids,
        unknown_environment=current.unknown_environment,
        lang=current.lang,
    )


def _complete(current: Parsed, earlier: Parsed) -> Parsed:
    """The current request with the names it lacks taken from the earlier one."""
    return replace(
        current,
        release_ids=current.release_ids or earlier.release_ids,
        environments=current.environments or earlier.environments,
        services=current.services or earlier.services,
        projects=current.projects or earlier.projects,
    )


def _names_something(parsed: Parsed) -> bool:
    """Whether a message without a verb still names a value (an answer), not just chatter."""
    return bool(
        parsed.environments
        or parsed.services
        or parsed.projects
        or parsed.versions
        or parsed.replicas
        or parsed.release_ids
        or re.fullmatch(r"\s*\d{1,4}\s*", parsed.text)
    )


def _answer(earlier: Parsed, current: Parsed) -> Parsed:
    """A bare answer ("staging", "4", "1.7.0") completes the earlier request."""
    number = re.fullmatch(r"\s*(\d{1,4})\s*", current.text)
    if number and earlier.intent == "scale":
        current = replace(current, replicas=[(int(number.group(1)), 0)])
    elif number and earlier.intent == "deploy":
        current = replace(current, versions=[(number.group(1), 10**6)])
    return _repeat(earlier, current)


def _infer(parsed: Parsed, message: Message) -> Parsed:
    """The intent of a request that names things but no verb: "web 1.4.2 -> prod"."""
    if parsed.services and (parsed.versions or parsed.tagged):
        return replace(parsed, intent="deploy")
    if (
        parsed.services
        and parsed.replicas
        and re.search(r"[x×]\s*\d|replica|instance|pod|副本|实例|\d\s*[个台]", parsed.text)
    ):
        return replace(parsed, intent="scale")
    if parsed.release_ids:
        own = RELEASE_ID.sub(" ", parsed.text)
        unknown = [w for w in LATIN.findall(own) if w not in STOPWORDS]
        if unknown:
            raise Question(
                say("what_to_do_with", parsed.lang, releases=", ".join(parsed.release_ids))
            )
        return replace(parsed, intent="status")
    if parsed.symptom and (parsed.services or parsed.projects or parsed.environments):
        return replace(parsed, intent="diagnose")
    return parsed
