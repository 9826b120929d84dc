"""Folding what people type onto the words the planner knows: inflections and typos.

"approving" -> approve, "rejected" -> reject, "deplyo" -> deploy, "wrker" -> worker (a
catalog name). Only latin words are folded; function words are never "corrected".
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from rapidfuzz.distance import DamerauLevenshtein
from rapidfuzz.process import extract

from agent.rules.function_words import STOPWORDS
from agent.rules.vocabulary import ENVIRONMENT_SYNONYMS, INTENTS, SYMPTOMS

LATIN_WORD = re.compile(r"[a-z][a-z'-]*[a-z]|[a-z]")
SUFFIXES = ("ing", "ed", "es", "s", "d")


def _latin_words(phrases: Iterable[str]) -> set[str]:
    return {w for p in phrases if p.isascii() for w in p.split()}


VERBS = frozenset(_latin_words(w for _, words in INTENTS for w in words) | _latin_words(SYMPTOMS))


def _meanings() -> dict[str, frozenset[str]]:
    found: dict[str, set[str]] = {}
    for what, phrases in [*INTENTS, ("symptom", SYMPTOMS)]:
        for word in _latin_words(phrases):
            found.setdefault(word, set()).add(what)
    return {word: frozenset(whats) for word, whats in found.items()}


# What a verb word can stand for: the intents whose phrases use it ("rollback" and "roll-back"
# mean the same; "more" and "move" do not). A catalog name stands for itself.
MEANINGS = _meanings()
# Environment words are matched exactly: "prdo" is a question ("did you mean prod?"), not a
# guess, because the environment decides what a change touches.
ENVIRONMENT_WORDS = frozenset(_latin_words(w for ws in ENVIRONMENT_SYNONYMS.values() for w in ws))


def _stems(word: str) -> list[str]:
    """Candidate base forms: approving -> approv, approve; scaling -> scale; pods -> pod."""
    out = []
    for suffix in SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            stem = word[: -len(suffix)]
            out += [stem, stem + "e"]
            if len(stem) > 3 and stem[-1] == stem[-2]:  # "stopped" -> stop
                out.append(stem[:-1])
    return out


def _max_typos(word: str) -> int:
    return 0 if len(word) < 4 else 1 if len(word) < 8 else 2


@lru_cache(maxsize=4096)
def fold(word: str, known: frozenset[str], names: frozenset[str] = frozenset()) -> str | None:
    """The known word `word` stands for (itself, a base form, or a typo's fix), else None.

    `names`: those of `known` that are catalog names; each means itself, even one spelt like a
    verb word (a service called `status`)."""
    if word in known:
        return word
    if word in STOPWORDS:
        return None
    for stem in _stems(word):
        if stem in known:
            return stem
    limit = _max_typos(word)
    if not limit:  # "wbe" could be several things: the unknown name gets a question
        return None
    nearest = extract(
        word,
        [k for k in known if abs(len(k) - len(word)) <= limit and k[:1] == word[:1]],
        scorer=DamerauLevenshtein.distance,
        score_cutoff=limit,
        limit=None,
    )
    if not nearest:
        return None
    best = sorted(str(k) for k, distance, _ in nearest if distance == nearest[0][1])
    if len({frozenset({k}) if k in names else MEANINGS.get(k, frozenset({k})) for k in best}) > 1:
        # As near to words that mean different things ("mode": more? move?): either is a
        # guess. Which one came first hung on a set's order, so the same message planned
        # differently from one process to the next; the word now stays unknown.
        return None
    return best[0]  # one meaning however it is spelt ("rolllback": rollback, roll-back)


def correct(text: str, names: frozenset[str]) -> str:
    """`text` with every latin word folded onto a verb or a catalog name where one fits."""
    known = VERBS | names

    def fix(match: re.Match[str]) -> str:
        word = match.group(0)
        if word in known or word in STOPWORDS or word in ENVIRONMENT_WORDS:
            return word
        return fold(word, known, names) or word

    return LATIN_WORD.sub(fix, text)
