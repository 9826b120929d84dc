"""Parsing one chat message: clauses, intents and the values in them.

Nothing here knows the catalog's rules; names are only recognised (`resolve` decides what
they mean). It reads only the user's own words (`message` sets quoted text aside).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache

from agent.language import language_of
from agent.rules.function_words import (
    CLAUSE_SPLITTERS,
    COMMENT_MARKERS,
    EMERGENCY,
    EVERYWHERE,
    GO_AHEAD,
    NEGATION,
    NUMBER_WORDS,
    PRONOUNS,
    QUESTION_END,
    QUESTION_LEAD,
    REASON_MARKERS,
    SAME_AS_BEFORE,
    STOPWORDS,
)
from agent.rules.lexicon import correct
from agent.rules.message import Message
from agent.rules.segment import boundaries, found
from agent.rules.vocabulary import (
    ENVIRONMENT_SYNONYMS,
    INJECTION_MARKERS,
    INTENTS,
    SPLIT_PHRASES,
    STATES,
    SYMPTOMS,
)

# Intents that change something; their verb at the start of a clause outranks other words.
ACTIONS = {
    "rollback",
    "reject",
    "approve",
    "cancel",
    "takeover",
    "submit",
    "apply",
    "scale",
    "deploy",
    "repreview",
    "retry",
    "freeze",
    "unfreeze",
    "promote",
}
REASONED = {"reject", "cancel", "approve", "freeze"}  # a reason or comment may follow them
PRIORITY = {intent: rank for rank, (intent, _) in enumerate(INTENTS)}
INTENT_WORDS = [(intent, word) for intent, words in INTENTS for word in words]
CJK_WORDS = tuple(
    sorted(
        {
            w
            for words in [*(ws for _, ws in INTENTS), *ENVIRONMENT_SYNONYMS.values(), SYMPTOMS]
            for w in words
            if not w.isascii()
        }
    )
)

CLAUSE_BREAK = re.compile(
    r"[,;!?\n]|\.(?=\s|$)|" + "|".join(re.escape(s) for s in CLAUSE_SPLITTERS)
)
FILLER = re.compile(
    r"^(?:\s|please|pls|plz|kindly|can you|could you|would you|can we|hey|hi|ok|okay|so|now|"
    r"just|let's|lets|let me|i want to|i'd like to|go ahead and|帮我|帮忙|麻烦|请|把|给我|先|"
    r"我要|我想|赶紧|马上|立即|快)+"
)

RELEASE_ID = re.compile(
    r"(?:(?<![a-z0-9])r-?|(?<![a-z0-9])release\s+#?|#|发布\s*)(\d{1,9})(?![0-9]|\.\d)"
)
VERSION = re.compile(
    r"(?<![a-z0-9.:/_-])(v?\d+\.\d+(?:\.\d+){0,2}(?:[-+][0-9a-z][0-9a-z.-]*)?|v\d+"
    r"|[a-z][a-z0-9]*-(?=[0-9a-f]*\d)[0-9a-f]{6,40}|(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40})"
    r"(?![a-z0-9.]|-[a-z0-9])"
)
# svc:tag, also as the tail of a full image reference (registry:5000/team/svc:tag).
TAGGED = re.compile(
    r"(?<![a-z0-9_.:/-])(?:[a-z0-9][a-z0-9_.-]*(?::\d+)?/)*"
    r"([a-z0-9][a-z0-9_-]*):([a-z0-9_][a-z0-9_.-]*[a-z0-9])"
)
NUMBER = r"(\d{1,4}|" + "|".join(NUMBER_WORDS) + ")"
REPLICAS = [
    re.compile(r"(?:\bto|=|到|为|成|至)\s*" + NUMBER + r"(?![\d.a-z])(?!\s*(?:\.|版本|version))"),
    re.compile(
        NUMBER + r"\s*(?:[a-z][a-z0-9-]*\s+)?"
        r"(?:replicas?|instances?|pods?|copies|个副本|个实例|个|台|副本|份)"
    ),
    re.compile(r"(?<![a-z0-9])[x×]\s*(\d{1,4})\b"),
]
ENV_WORD = re.compile(r"(?:\bto|\bin|\bon|到|在)\s*([a-z][a-z0-9_-]{1,30})\s*$")
MINE = re.compile(r"\b(?:my|mine)\b|(?<!show )(?<!give )(?<!tell )(?<!let )\bme\b|我的|给我|我")
TRAILING = re.compile(r"^[\s,:;.!?\-—–>]*(?:去|吧|了|掉|一下|啊|呀|哦|的)*[\s,:;.!?\-—–]*")


@dataclass
class Clause:
    """One request-sized piece of a message (several merged when they belong together)."""

    raw: str  # normalised, as typed
    text: str  # typos and inflections folded
    intent: str | None = None
    trigger_end: int = 0
    trigger: str | None = None
    symptom: bool = False
    same_as_before: bool = False
    pronoun: bool = False
    go_ahead: bool = False
    negated: bool = False


@dataclass
class Parsed:
    """What one clause asks for and names."""

    text: str
    raw: str
    intent: str | None
    lang: str
    release_ids: list[str] = field(default_factory=list)
    environments: list[str] = field(default_factory=list)
    unknown_environment: str | None = None
    projects: list[str] = field(default_factory=list)
    services: list[tuple[str, int]] = field(default_factory=list)
    versions: list[tuple[str, int]] = field(default_factory=list)
    tagged: dict[str, str] = field(default_factory=dict)
    replicas: list[tuple[int, int]] = field(default_factory=list)
    reason: str | None = None
    comment: str | None = None
    emergency: bool = False
    everywhere: bool = False
    state: str | None = None
    mine: bool = False
    symptom: bool = False
    pronoun: bool = False
    same_as_before: bool = False
    go_ahead: bool = False
    negated: bool = False
    trigger: str | None = None
    source_environment: str | None = None  # "from staging", "从预发"


def _has_word(text: str, phrase: str, edges: set[int]) -> list[int]:
    # Every match below contains the phrase itself: most of the vocabulary is absent from a
    # message, and a substring test answers that without building a pattern (a chat turn
    # tries every word of every intent; re's pattern cache does not hold them all).
    if phrase not in text:
        return []
    if phrase.isascii():
        return [m.start() for m in _phrase(phrase).finditer(text)]
    hits = found(text, phrase, edges)
    if not hits and len(phrase) >= 3:
        hits = [m.start() for m in re.finditer(re.escape(phrase), text)]
    return hits


# Patterns are built once per word: a turn tries hundreds of words, and formatting, escaping
# and looking each one up in re's own cache was a third of planning a message.
@lru_cache(maxsize=4096)
def _phrase(phrase: str) -> re.Pattern[str]:
    """A latin vocabulary phrase, not glued to other letters or digits."""
    return re.compile(rf"(?<![a-z0-9_'-]){re.escape(phrase)}(?![a-z0-9_-])")


@lru_cache(maxsize=1024)
def _marker(marker: str, then: str = "") -> re.Pattern[str]:
    """A reason or comment marker (latin ones as a word), then `then`."""
    body = rf"(?<![a-z]){re.escape(marker)}(?![a-z])" if marker.isascii() else re.escape(marker)
    return re.compile(body + then, re.S)


def _edges(text: str) -> set[int]:
    return boundaries(text, CJK_WORDS) if language_of(text) == "zh" else {0, len(text)}


def detect(clause: Clause) -> Clause:
    """Find the clause's intent: a leading action verb, else the first intent by priority."""
    text = clause.text
    # "approvals are off", "no approval needed" ask for no list: a read word inside an
    # injection phrase is not an intent (an action verb there still is one, and gets a card).
    blanked = [
        (m.start(), m.end())
        for marker in INJECTION_MARKERS
        if marker in text
        for m in re.finditer(re.escape(marker), text)
    ]
    edges = _edges(text)
    start = FILLER.match(text)
    lead = start.end() if start else 0
    hits: list[tuple[int, int, str, int, str]] = []  # (rank, position, intent, end, word)
    for intent, word in INTENT_WORDS:
        if word not in text:  # most of the vocabulary, most of the time (see `_has_word`)
            continue
        for position in _has_word(text, word, edges):
            end = position + len(word)
            if intent not in ACTIONS and any(a < end and position < b for a, b in blanked):
                continue
            hits.append((PRIORITY[intent], position, intent, end, word))
    hits += _split_hits(text, edges)
    # The longest phrase wins where two overlap: "to approve" is a list, not an approval.
    hits = _longest(hits)
    leading = [h for h in hits if h[1] <= lead and h[2] in ACTIONS]
    chosen = min(leading or hits, default=None)
    if chosen and chosen[2] in ACTIONS and re.search(NEGATION, text[lead : chosen[1]]):
        clause.negated = True
        return clause
    if chosen:
        clause.intent, clause.trigger_end, clause.trigger = chosen[2], chosen[3], chosen[4]
        asking = re.match(QUESTION_LEAD, text[lead:]) or re.search(QUESTION_END, text)
        if asking and clause.intent in ACTIONS:
            clause.intent = "status"
        elif clause.intent in ACTIONS and text[clause.trigger_end :].startswith("的"):
            clause.intent = "releases"  # "我提交的发布": the verb describes releases
    clause.symptom = any(_has_word(text, w, edges) for w in SYMPTOMS)
    clause.same_as_before = any(_has_word(text, w, edges) for w in SAME_AS_BEFORE)
    clause.pronoun = any(_has_word(text, w, edges) for w in PRONOUNS)
    bare = re.sub(r"[\s,.!?]+", " ", text).strip()
    parts = [p for p in re.split(r"[\s,]+", bare) if p]
    agreeing = [p for p in parts if p in GO_AHEAD or p.rstrip("吧啊呀了") in GO_AHEAD]
    clause.go_ahead = bool(agreeing) and all(p in agreeing or p in STOPWORDS for p in parts)
    return clause


def _split_hits(text: str, edges: set[int]) -> list[tuple[int, int, str, int, str]]:
    """Hits of a verb whose particle comes later: "try R-12 again" spans "try ... again"."""
    hits = []
    for intent, head, tail in SPLIT_PHRASES:
        for position in _has_word(text, head, edges):
            start = position + len(head)
            match = _tail(tail).search(text, start)
            if match:
                hits.append((PRIORITY[intent], position, intent, match.end(), head))
    return hits


@lru_cache(maxsize=256)
def _tail(tail: str) -> re.Pattern[str]:
    if not tail.isascii():
        return re.compile(re.escape(tail))
    return re.compile(rf"(?<![a-z0-9_'-]){re.escape(tail)}(?:e?s)?(?![a-z0-9_-])")


def _longest(hits: list[tuple[int, int, str, int, str]]) -> list[tuple[int, int, str, int, str]]:
    """Hits not inside a longer hit (one sweep by start, so a long message stays fast)."""
    kept = []
    reach, reach_start = -1, -1  # the furthest end seen so far, and where that hit started
    for hit in sorted(hits, key=lambda h: (h[1], -h[3])):
        inside = reach > hit[3] or (reach == hit[3] and reach_start < hit[1])
        if not inside:
            kept.append(hit)
        if hit[3] > reach:
            reach, reach_start = hit[3], hit[1]
    return kept


def clauses(message: Message, names: CatalogNames) -> list[Clause]:
    """The message cut into clauses, each with its intent; pieces with none join a neighbour."""
    head, tail = _reason_tail(message.own)
    pieces = [p.strip() for p in CLAUSE_BREAK.split(head)]
    found_clauses = [
        detect(Clause(raw=p, text=correct(p, names.all))) for p in pieces if p and p.strip(" .")
    ]
    negated = [c for c in found_clauses if c.negated]
    found_clauses = [c for c in found_clauses if not c.negated]  # "but don't touch prod"
    if negated and not found_clauses:
        return negated[:1]
    merged: list[Clause] = []
    pending: list[Clause] = []  # pieces waiting for a clause with an intent
    for clause in found_clauses:
        if clause.intent is None and merged and _elsewhere(merged[-1], clause, names):
            # "deploy web 1.8 to prod and api 2.4 to staging": the same verb, another target
            clause = replace(clause, intent=merged[-1].intent, trigger=merged[-1].trigger)
            merged.append(clause)
            continue
        if (
            merged
            and merged[-1].intent in REASONED
            and (clause.intent is None or merged[-1].intent != "approve")
            and _bare(clause, names)
        ):
            # "R-7 不行，回滚方案没写": what follows a rejection is its reason, whatever it says
            merged[-1] = _join(merged[-1], replace(clause, intent=None))
            continue
        if clause.intent is None and not clause.same_as_before:
            if merged and not merged[-1].same_as_before:
                merged[-1] = _join(merged[-1], clause)
            else:
                pending.append(clause)
            continue
        for waiting in pending:
            clause = _join(waiting, clause, keep_second=True)
        pending = []
        if merged and clause.intent is not None and merged[-1].intent == clause.intent:
            merged[-1] = _join(merged[-1], clause)
        else:
            merged.append(clause)
    if pending:
        first = pending[0]
        for waiting in pending[1:]:
            first = _join(first, waiting)
        merged.append(first)
    if tail and merged:  # the reason names ids and words, but asks for nothing
        last = merged[-1]
        merged[-1] = replace(last, raw=f"{last.raw} {tail}", text=f"{last.text} {tail}")
    return merged


def _bare(clause: Clause, names: CatalogNames) -> bool:
    """The clause names no release, service or project (it can only be a comment)."""
    text = clause.text
    return not RELEASE_ID.search(text) and not any(
        _says(text, n) for n in [*names.services, *names.projects]
    )


def _elsewhere(previous: Clause, clause: Clause, names: CatalogNames) -> bool:
    """The clause names its own service and another environment than the previous one."""
    if previous.intent not in ("deploy", "scale"):
        return False
    mine, _ = environments(clause.text, names.environments)
    theirs, _ = environments(previous.text, names.environments)
    named = any(_says(clause.text, s) for s in names.services)
    return bool(mine and theirs and named and set(mine).isdisjoint(theirs))


def _reason_tail(text: str) -> tuple[str, str]:
    """Split "reject R-1, reason: missing changelog" before its reason."""
    cut = len(text)
    for marker in [*REASON_MARKERS, *COMMENT_MARKERS]:
        match = _marker(marker).search(text) if marker in text else None
        if match and match.start() > 0:
            cut = min(cut, match.start())
    return text[:cut], text[cut:]


def _join(first: Clause, second: Clause, keep_second: bool = False) -> Clause:
    main = second if keep_second else first
    offset = len(first.text) + 2
    return Clause(
        raw=f"{first.raw}, {second.raw}",
        text=f"{first.text}, {second.text}",
        intent=main.intent,
        trigger_end=main.trigger_end + (offset if keep_second else 0),
        trigger=main.trigger,
        symptom=first.symptom or second.symptom,
        same_as_before=first.same_as_before or second.same_as_before,
        pronoun=first.pronoun or second.pronoun,
        go_ahead=first.go_ahead or second.go_ahead,
        negated=first.negated or second.negated,
    )


@lru_cache(maxsize=4096)
def _word(name: str) -> re.Pattern[str]:
    """`name` not glued to other latin letters or digits; a hyphen may be a space or nothing."""
    body = r"[\s_-]?".join(re.escape(part) for part in name.split("-"))
    return re.compile(rf"(?<![a-z0-9_-]){body}(?![a-z0-9_-])")


def _mentions(text: str, name: str) -> Iterator[re.Match[str]]:
    """Where `text` names `name` (see `_word`); most names are absent, and a substring test
    says so without the pattern (only a hyphen can be written another way)."""
    if "-" not in name and name not in text:
        return iter(())
    return _word(name).finditer(text)


def _says(text: str, name: str) -> bool:
    return next(_mentions(text, name), None) is not None


@lru_cache(maxsize=256)
def _environment_words(known: tuple[str, ...]) -> Mapping[str, str]:
    """Every word for an environment, longest first, with its canonical name."""
    words = {w: env for env, ws in ENVIRONMENT_SYNONYMS.items() for w in ws}
    words.update({env: env for env in known})
    return {word: words[word] for word in sorted(words, key=len, reverse=True)}


def environments(text: str, known: list[str]) -> tuple[list[str], str | None]:
    """Environments named (canonical names, in order), and an unknown one after to/in/on."""
    words = _environment_words(tuple(known))
    hits: list[tuple[int, str]] = []
    taken: list[tuple[int, int]] = []
    for word in words:
        if word.isascii():
            matches = _mentions(text, word)
        elif word in text:
            matches = re.finditer(re.escape(word), text)
        else:
            continue
        for match in matches:
            span = (match.start(), match.end())
            if any(a < span[1] and span[0] < b for a, b in taken):
                continue
            taken.append(span)
            hits.append((match.start(), words[word]))
    hits.sort()
    source = source_environment(text, known)
    named = [env for pos, env in hits]
    if source and len(set(named)) > 1:
        named = [env for env in named if env != source] or named
    unknown = ENV_WORD.search(text)
    unknown_word = unknown.group(1) if unknown and unknown.group(1) not in words else None
    return list(dict.fromkeys(named)), unknown_word


def source_environment(text: str, known: list[str]) -> str | None:
    """The environment named right after "from" / "从" (canonical name), if any."""
    words = _environment_words(tuple(known))
    for match in re.finditer(r"(?:\bfrom\s+(?:the\s+)?|从\s*)(\S+)", text):
        following = match.group(1)
        for word in words:
            if following == word or (
                following.startswith(word)
                and (not word.isascii() or not re.match(r"[a-z0-9_-]", following[len(word) :]))
            ):
                return words[word]
    return None


def parse(clause: Clause, message: Message, catalog_names: CatalogNames) -> Parsed:
    """Everything one clause names: ids, names, versions, counts, reasons."""
    text = clause.text
    ids = [f"R-{m.group(1)}" for m in RELEASE_ID.finditer(text)]
    envs, unknown_env = environments(text, catalog_names.environments)
    services: list[tuple[str, int]] = []
    for name in catalog_names.services:
        services += [(name, m.start()) for m in _mentions(text, name)]
    services.sort(key=lambda item: item[1])
    tagged_spans: list[tuple[int, int]] = []
    tagged: dict[str, str] = {}
    for match in TAGGED.finditer(text):
        if match.group(1) in catalog_names.services:
            tagged[match.group(1)] = match.group(2)
            tagged_spans.append((match.start(), match.end()))
    versions = [
        (m.group(1), m.start())
        for m in VERSION.finditer(text)
        if not any(a <= m.start() < b for a, b in tagged_spans)
    ]
    replicas = [
        (_number(m.group(1)), m.start(1))
        for pattern in REPLICAS
        for m in pattern.finditer(text)
        if not any(a <= m.start(1) < b for a, b in tagged_spans)
    ]
    replicas = sorted({pos: n for n, pos in replicas}.items())
    parsed = Parsed(
        text=text,
        raw=clause.raw,
        intent=clause.intent,
        lang=message.lang,
        release_ids=list(dict.fromkeys(ids)),
        environments=envs,
        unknown_environment=unknown_env,
        projects=[p for p in catalog_names.projects if _says(text, p)],
        services=services,
        versions=versions,
        tagged=tagged,
        replicas=[(n, pos) for pos, n in replicas],
        emergency=any(w in text for w in EMERGENCY),
        everywhere=any(w in text for w in EVERYWHERE),
        state=next((v for k, v in STATES.items() if k in text), None),
        mine=bool(MINE.search(text)),
        symptom=clause.symptom,
        pronoun=clause.pronoun,
        same_as_before=clause.same_as_before,
        go_ahead=clause.go_ahead,
        negated=clause.negated,
        trigger=clause.trigger,
        source_environment=source_environment(text, catalog_names.environments),
    )
    parsed.reason = _after_marker(clause.raw, REASON_MARKERS)
    parsed.comment = _after_marker(clause.raw, COMMENT_MARKERS)
    remainder = _remainder(clause)
    if parsed.reason is None and parsed.comment is None and remainder:
        parsed.reason = parsed.comment = remainder
    if parsed.reason is None and message.quoted:
        parsed.reason = parsed.comment = message.quoted[0][:500]
    return parsed


def _number(word: str) -> int:
    return int(word) if word.isdigit() else NUMBER_WORDS[word]


def _after_marker(raw: str, markers: list[str]) -> str | None:
    for marker in markers:
        match = _marker(marker, r"\s*[:：]?\s*(.+)$").search(raw) if marker in raw else None
        if match:
            value = match.group(1).strip(" ,.;:-")
            if value:
                return value[:500]
    return None


def _as_typed(clause: Clause, cut: int) -> str:
    """What the user typed after offset `cut` of the folded text (folding keeps the words)."""
    typed, folded = clause.raw.split(" "), clause.text.split(" ")
    if len(typed) != len(folded):
        return clause.text[cut:]
    position = 0
    for index, word in enumerate(folded):
        end = position + len(word)
        if cut <= end:
            inside = cut - position if word == typed[index] else len(typed[index])
            head = typed[index][max(inside, 0) :]
            return " ".join([head, *typed[index + 1 :]])
        position = end + 1
    return ""


def _remainder(clause: Clause) -> str | None:
    """Free text after the last release id and the verb: "reject R-6 - wrong image"."""
    ids = list(RELEASE_ID.finditer(clause.text))
    if not ids:
        return None
    rest = _as_typed(clause, max(ids[-1].end(), clause.trigger_end))
    for intent, words in INTENTS:  # "R-1 LGTM，批准": a second verb is no comment
        if intent == clause.intent:
            for word in sorted(words, key=len, reverse=True):
                rest = rest.replace(word, " ") if not word.isascii() else rest
    rest = TRAILING.sub("", rest).strip(" ,.;:!?")
    words = [w for w in re.split(r"[\s,]+", rest) if w]
    if not words or all(w in STOPWORDS for w in words):
        return None
    return rest[:500]


@dataclass(frozen=True)
class CatalogNames:
    """The names a message may use, from the caller's catalog."""

    projects: list[str]
    services: list[str]
    environments: list[str]

    @property
    def all(self) -> frozenset[str]:
        """Project and service names, for typo folding (environments are matched exactly)."""
        return frozenset([*self.projects, *self.services])
