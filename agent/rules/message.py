"""A message as typed: quoted text set aside, the rest normalised.

Quoted text (code blocks, `inline code`, "quotes", 「」, > quoted lines) is data: it is kept
for reasons and comments but never read for intents, names or ids.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.language import language_of
from agent.rules.vocabulary import INJECTION_MARKERS

QUOTED = [
    re.compile(r"```.*?(?:```|$)", re.S),
    re.compile(r"`[^`\n]*`"),
    re.compile(r"\"[^\"\n]*\"|“[^”\n]*”|「[^」\n]*」|『[^』\n]*』|‘[^’\n]*’"),
    re.compile(r"(?<![a-z0-9])'[^'\n]{3,}'(?![a-z0-9])", re.I),
    re.compile(r"^\s*>.*$", re.M),
]
FOLD = str.maketrans(
    {
        "，": ",",
        "。": ". ",
        "：": ":",
        "；": ";",
        "！": "!",
        "？": "?",
        "（": " ",
        "）": " ",
        "、": ",",
        "　": " ",
        "→": " to ",
    }
)


@dataclass
class Message:
    """A message with its quoted parts set aside."""

    raw: str
    own: str
    quoted: list[str]
    lang: str

    @property
    def injection(self) -> bool:
        """The user's own words try to skip a step."""
        return any(marker in self.own for marker in INJECTION_MARKERS)


def split_quotes(text: str) -> Message:
    """Set quoted text aside: it is data, never an instruction."""
    quoted: list[str] = []

    def keep(match: re.Match[str]) -> str:
        inner = match.group(0).strip().strip("`\"“”「」『』‘’'>").strip()
        if inner:
            quoted.append(inner)
        return " "

    own = text
    for pattern in QUOTED:
        own = pattern.sub(keep, own)
    return Message(raw=text, own=normalize(own), quoted=quoted, lang=language_of(text))


PARTICLE_VERB = re.compile(
    r"\b(roll|take|send|bring)\s+(it|this|that|them|these|those)\s+(back|over)\b"
)


def normalize(text: str) -> str:
    """Lowercase, full-width punctuation folded, spaces squeezed (newlines kept)."""
    folded = re.sub(r"[ \t]+", " ", text.translate(FOLD).lower()).strip()
    return PARTICLE_VERB.sub(r"\1 \3 \2", folded)  # "roll it back" -> "roll back it"
