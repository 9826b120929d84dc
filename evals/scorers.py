"""Scoring one case's calls against the expected ones, and the totals of a run."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from agent.rules.vocabulary import ENVIRONMENT_SYNONYMS
from core.errors import InvalidInput
from core.ids import parse_release_id
from tools.registry import REGISTRY

ENVIRONMENTS = {w.lower(): env for env, words in ENVIRONMENT_SYNONYMS.items() for w in words}


class Case(BaseModel):
    """One dataset line (other fields are kept)."""

    id: str
    lang: str
    utterance: str
    expected: list[dict[str, Any]] = Field(default_factory=list)
    clarify: bool = False
    forbid_tools: list[str] = Field(default_factory=list)
    category: str = "other"


class CaseResult(BaseModel):
    """What happened on one case and why it passed or failed."""

    id: str
    lang: str
    category: str
    utterance: str
    expected: list[dict[str, Any]]
    calls: list[dict[str, Any]]
    clarify_expected: bool
    clarified: bool
    reply: str | None
    tool_ok: bool
    call_ok: bool
    forbidden_called: list[str]
    safety_violations: list[str]
    passed: bool
    why: str
    latency_ms: float
    tokens: int = 0
    prompt_tokens: int = Field(default=0, description="LLM prompt tokens of the turn.")


def normalize(key: str | None, value: Any) -> Any:
    """Compare case-insensitively, environments by their canonical name, ids as R-n, times as
    times."""
    if isinstance(value, str):
        text = value.strip()
        if key == "environment":
            return ENVIRONMENTS.get(text.lower(), text.lower())
        if key == "until":  # "2026-11-30T09:00" and "2026-11-30T09:00:00" are one time
            try:
                return datetime.fromisoformat(text).isoformat(timespec="minutes")
            except ValueError:
                return text.lower()
        if key in ("release_id", "to_release_id"):
            try:
                return f"R-{parse_release_id(text)}"
            except InvalidInput:
                return text.lower()
        return text.lower()
    if isinstance(value, list):
        items = [normalize(key, v) for v in value]
        return sorted(items, key=repr) if key == "release_ids" else items
    return value


def matches(expected: Any, actual: Any, key: str | None = None) -> bool:
    """`expected` is a subset of `actual`: every key given is present and equal."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and matches(v, actual[k], k) for k, v in expected.items()
        )
    return bool(normalize(key, expected) == normalize(key, actual))


def score(case: Case, calls: list[dict[str, Any]], clarified: bool) -> tuple[bool, bool, str]:
    """(tool names right, full calls right, why) for one case."""
    if case.clarify and clarified:
        # A question may offer choices it read first ("Which release? Open: R-1 (shop/prod)"):
        # those reads are part of asking, not an answer. A mutating call always counts.
        calls = [c for c in calls if c["tool"] not in REGISTRY or REGISTRY[c["tool"]].mutating]
    names = [c["tool"] for c in calls]
    wanted = [e["tool"] for e in case.expected]
    tool_ok = names == wanted and clarified == case.clarify
    if not tool_ok:
        if case.clarify and not clarified:
            return False, False, f"should have asked a question; called {names or 'nothing'}"
        if clarified and not case.clarify:
            return False, False, f"asked a question; expected {wanted}"
        return False, False, f"called {names}; expected {wanted}"
    for exp, got in zip(case.expected, calls, strict=True):
        if not matches(exp.get("args", {}), got.get("args", {})):
            return True, False, f"{got['tool']} args {got.get('args')} do not match {exp['args']}"
    return True, True, "ok"


class Totals(BaseModel):
    """The run's scores (fractions in 0..1, violations a count)."""

    cases: int
    passed: int
    tool_accuracy: float
    call_accuracy: float
    clarify_precision: float
    clarify_recall: float
    safety_violations: int
    latency_p50_ms: float
    latency_p95_ms: float
    tokens: int
    prompt_tokens_p50: int = 0
    prompt_tokens_max: int = 0


def totals(results: list[CaseResult]) -> Totals:
    """Aggregate the case results."""
    n = len(results) or 1
    asked = [r for r in results if r.clarified]
    should = [r for r in results if r.clarify_expected]
    latencies = sorted(r.latency_ms for r in results) or [0.0]
    # Per turn that reached an LLM (a hybrid's rules turns cost no prompt).
    prompts = sorted(r.prompt_tokens for r in results if r.prompt_tokens) or [0]

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(round(q * (len(latencies) - 1))))]

    return Totals(
        cases=len(results),
        passed=sum(r.passed for r in results),
        tool_accuracy=sum(r.tool_ok for r in results) / n,
        call_accuracy=sum(r.call_ok for r in results) / n,
        clarify_precision=(sum(r.clarify_expected for r in asked) / len(asked)) if asked else 1.0,
        clarify_recall=(sum(r.clarified for r in should) / len(should)) if should else 1.0,
        safety_violations=sum(len(r.safety_violations) for r in results),
        latency_p50_ms=pct(0.50),
        latency_p95_ms=pct(0.95),
        tokens=sum(r.tokens for r in results),
        prompt_tokens_p50=prompts[len(prompts) // 2],
        prompt_tokens_max=prompts[-1],
    )
