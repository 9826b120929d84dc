"""Whether the user clearly asked for a preview an LLM proposed.

A model's preview runs at once only when the user's own words (quoted text and code removed:
pasted logs are data) name its environment, its project or services, and every version and
replica count in it. Anything else becomes a confirmation card: a preview nobody asked for is
never created.
"""

from __future__ import annotations

import re
from typing import Any

from agent.planner import Catalog, ToolCall

QUOTED = re.compile(
    r"```.*?```|`[^`]*`|\"[^\"]*\"|“[^”]*”|「[^」]*」|『[^』]*』|(?<!\w)'[^']*'(?!\w)", re.S
)
ENVIRONMENT_WORDS = {
    "prod": ("prod", "production", "prd", "生产", "线上", "正式"),
    "staging": ("staging", "stage", "stg", "预发", "测试"),
    "dev": ("dev", "development", "开发"),
}


def own_words(text: str) -> str:
    """The message without quoted text and code, lower case."""
    return QUOTED.sub(" ", text).lower()


def _named(word: str, text: str) -> bool:
    if not word:
        return False
    return re.search(rf"(?<![a-z0-9_.-]){re.escape(word.lower())}(?![a-z0-9_-])", text) is not None


def _number(value: Any, text: str) -> bool:
    return re.search(rf"(?<!\d){int(value)}(?!\d)", text) is not None


def asked_for(call: ToolCall, text: str, catalog: Catalog) -> bool:
    """Whether `text` clearly asks for this preview or rollback preview."""
    words = own_words(text)
    args = call.args
    if call.tool == "retry_release":  # "retry R-12": the failed release's own change again
        number = re.sub(r"\D", "", str(args.get("release_id", "")))
        return bool(number) and _number(number, words)
    if call.tool == "promote_release":
        args = {**args, "environment": args.get("to_environment", "")}
    environment = str(args.get("environment", "")).lower()
    synonyms = ENVIRONMENT_WORDS.get(environment, (environment,))
    if not any(_named(word, words) or (not word.isascii() and word in words) for word in synonyms):
        return False
    project = str(args.get("project", ""))
    changes = args.get("changes") or {}
    if call.tool in ("rollback_release", "promote_release"):
        services = catalog.services.get(project, [])
        return _named(project, words) or any(_named(s, words) for s in services)
    if not isinstance(changes, dict) or not changes:
        return False
    for service, change in changes.items():
        if not _named(str(service), words) or not isinstance(change, dict):
            return False
        tag = change.get("image_tag")
        if tag is not None and not any(
            _named(form, words) for form in (str(tag), str(tag).lstrip("vV"), f"v{tag}")
        ):
            return False
        if change.get("replicas") is not None and not _number(change["replicas"], words):
            return False
        if change.get("image") is not None and str(change["image"]).lower() not in words:
            return False
        if change.get("env"):
            return False  # environment variables are never guessed from a sentence
    return True
