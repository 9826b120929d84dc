"""Reports: a rich table on the terminal, a JSON report, a self-contained HTML page."""

from __future__ import annotations

import html
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from evals.scorers import CaseResult, Totals, totals


def breakdown(results: list[CaseResult], key: str) -> dict[str, dict[str, Any]]:
    """Totals per language, per category or per expected tool."""
    groups: dict[str, list[CaseResult]] = defaultdict(list)
    for result in results:
        if key == "tool":
            names = [e["tool"] for e in result.expected] or ["(clarify)"]
            for name in names:
                groups[name].append(result)
        else:
            groups[str(getattr(result, key))].append(result)
    return {
        name: {
            "cases": len(group),
            "passed": sum(r.passed for r in group),
            "call_accuracy": totals(group).call_accuracy,
        }
        for name, group in sorted(groups.items())
    }


def report(results: list[CaseResult], meta: dict[str, Any]) -> dict[str, Any]:
    """The JSON report: meta, totals, breakdowns and every case."""
    return {
        "meta": meta,
        "totals": totals(results).model_dump(),
        "by_language": breakdown(results, "lang"),
        "by_category": breakdown(results, "category"),
        "by_tool": breakdown(results, "tool"),
        "cases": [r.model_dump() for r in results],
    }


def print_table(
    results: list[CaseResult], summary: Totals, console: Console, *, all_cases: bool
) -> None:
    """Per-case rows (failures only unless `all_cases`) and the totals."""
    table = Table(title="cases" if all_cases else "failing cases")
    for column in ("id", "lang", "ok", "utterance", "calls", "why"):
        table.add_column(column, overflow="fold")
    for r in results:
        if all_cases or not r.passed:
            calls = ", ".join(c["tool"] for c in r.calls) or ("(question)" if r.clarified else "-")
            table.add_row(
                r.id, r.lang, "[green]✓[/]" if r.passed else "[red]✗[/]", r.utterance, calls, r.why
            )
    console.print(table)
    scores = Table(title="totals")
    for column in (
        "cases",
        "passed",
        "tool acc",
        "call acc",
        "clarify P",
        "clarify R",
        "safety violations",
        "p50 ms",
        "p95 ms",
        "tokens",
        "prompt tok/LLM turn p50 / max",
    ):
        scores.add_column(column)
    scores.add_row(
        str(summary.cases),
        str(summary.passed),
        f"{summary.tool_accuracy:.3f}",
        f"{summary.call_accuracy:.3f}",
        f"{summary.clarify_precision:.3f}",
        f"{summary.clarify_recall:.3f}",
        str(summary.safety_violations),
        f"{summary.latency_p50_ms:.1f}",
        f"{summary.latency_p95_ms:.1f}",
        str(summary.tokens),
        f"{summary.prompt_tokens_p50} / {summary.prompt_tokens_max}",
    )
    console.print(scores)
    # One plain line too: narrow terminals truncate the table, CI logs want grep-able figures.
    console.print(
        " ".join(
            f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
            for k, v in summary.model_dump().items()
        ),
        soft_wrap=True,
    )


def write_json(data: dict[str, Any], path: Path) -> None:
    """Write the JSON report."""
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")


def write_html(data: dict[str, Any], path: Path) -> None:
    """Write a self-contained HTML report (no external assets)."""
    e = html.escape
    t = data["totals"]
    meta = data["meta"]
    model = f" · model {e(str(meta['model']))}" if meta.get("model") else ""

    def group_table(title: str, groups: dict[str, dict[str, Any]]) -> str:
        rows = "".join(
            f"<tr><td>{e(name)}</td><td>{g['cases']}</td><td>{g['passed']}</td>"
            f"<td>{g['call_accuracy']:.3f}</td></tr>"
            for name, g in groups.items()
        )
        return (
            f"<h2>{e(title)}</h2><table><tr><th>{e(title.split()[-1])}</th><th>cases</th>"
            f"<th>passed</th><th>call accuracy</th></tr>{rows}</table>"
        )

    failing = (
        "".join(
            f"<tr><td>{e(c['id'])}</td><td>{e(c['lang'])}</td><td>{e(c['utterance'])}</td>"
            f"<td><code>{e(json.dumps(c['expected'], ensure_ascii=False))}</code></td>"
            f"<td><code>{e(json.dumps(c['calls'], ensure_ascii=False))}</code></td>"
            f"<td>{e(c['why'])}</td></tr>"
            for c in data["cases"]
            if not c["passed"]
        )
        or "<tr><td colspan=6>none</td></tr>"
    )
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>shipdeck eval: {e(str(meta.get("dataset")))}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:72rem}}
table{{border-collapse:collapse;margin:.5rem 0 1.5rem}}td,th{{border:1px solid #ccc;
padding:.3rem .6rem;text-align:left;vertical-align:top}}th{{background:#f3f3f3}}
.bad{{color:#b00}}code{{font-size:.85em}}</style></head><body>
<h1>shipdeck eval</h1>
<p>planner <b>{e(str(meta.get("planner")))}</b>{model}
 · dataset <b>{e(str(meta.get("dataset")))}</b> · world {e(str(meta.get("world")))}</p>
<table><tr><th>cases</th><th>passed</th><th>tool accuracy</th><th>call accuracy</th>
<th>clarify precision</th><th>clarify recall</th><th>safety violations</th>
<th>latency p50 / p95 ms</th><th>tokens</th><th>prompt tokens per LLM turn p50 / max</th></tr>
<tr><td>{t["cases"]}</td><td>{t["passed"]}</td><td>{t["tool_accuracy"]:.3f}</td>
<td>{t["call_accuracy"]:.3f}</td><td>{t["clarify_precision"]:.3f}</td>
<td>{t["clarify_recall"]:.3f}</td><td class="{"bad" if t["safety_violations"] else ""}">
{t["safety_violations"]}</td><td>{t["latency_p50_ms"]:.1f} / {t["latency_p95_ms"]:.1f}</td>
<td>{t["tokens"]}</td><td>{t["prompt_tokens_p50"]} / {t["prompt_tokens_max"]}</td></tr>
</table>
{group_table("by language", data["by_language"])}
{group_table("by tool", data["by_tool"])}
{group_table("by category", data["by_category"])}
<h2>failing cases</h2><table><tr><th>id</th><th>lang</th><th>utterance</th><th>expected</th>
<th>calls</th><th>why</th></tr>{failing}</table></body></html>"""
    path.write_text(page, encoding="utf-8")
