"""Prompts are files in `prompts/`, loaded by name at run time."""

from __future__ import annotations

from pathlib import Path

PROMPTS = Path(__file__).resolve().parent.parent / "prompts"


def load_prompt(name: str) -> str:
    """The text of `prompts/<name>.md`."""
    return (PROMPTS / f"{name}.md").read_text(encoding="utf-8")


def system_prompt() -> str:
    """The system prompt with every few-shot example appended."""
    examples = sorted((PROMPTS / "few_shot").glob("*.md"))
    shots = "\n\n".join(path.read_text(encoding="utf-8").strip() for path in examples)
    return load_prompt("system") + ("\n\nExamples:\n\n" + shots if shots else "")
