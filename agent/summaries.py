"""One-paragraph chat text for tool results (the structured result is sent alongside)."""

from __future__ import annotations

from typing import Any


def _diff_lines(diff: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    return [
        f"{service} {field}: {change.get('before')} -> {change.get('after')}"
        for service, fields in diff.items()
        for field, change in fields.items()
    ]


def summarize(tool: str, result: dict[str, Any], lang: str = "en") -> str:
    """A short human line for a tool's JSON result, in English or Chinese."""
    if tool in (
        "preview_release",
        "rollback_release",
        "repreview_release",
        "get_release",
        "retry_release",
        "promote_release",
    ):
        return _release(result, lang)
    if tool in ("declare_freeze", "lift_freeze", "list_freezes"):
        return _freezes(tool, result, lang)
    if tool in (
        "submit_release",
        "apply_release",
        "cancel_release",
        "approve_release",
        "reject_release",
        "takeover_approval",
    ):
        if lang == "zh":
            return f"{result.get('id')} 现在是 {result.get('lifecycle_state')}。"
        return f"{result.get('id')} is now {result.get('lifecycle_state')}."
    if tool == "target_status":
        lines = [
            f"{name}: {s.get('image')} x{s.get('replicas')} ({s.get('health')})"
            for name, s in result.get("services", {}).items()
        ]
        label = " (simulated)" if result.get("simulated") else ""
        return f"{result.get('project')}/{result.get('environment')}{label}: " + "; ".join(lines)
    if tool == "list_targets":
        items = result.get("items", [])
        return "Targets: " + (
            ", ".join(f"{t['project']}/{t['environment']} ({t['runtime']})" for t in items)
            or "none"
        )
    if tool == "list_approvals":
        items = result.get("items", [])
        if not items:
            return "No approvals match."
        return f"{len(items)} approval(s): " + ", ".join(
            f"{i['release_id']} {i['project']}/{i['environment']} ({i['state']})"
            for i in items[:10]
        )
    if tool == "list_releases":
        items = result.get("items", [])
        return (
            f"{len(items)} release(s): "
            + ", ".join(
                f"{r['id']} {r['project']}/{r['environment']} {r['lifecycle_state']}"
                for r in items[:10]
            )
            if items
            else "No releases match."
        )
    if tool == "release_timeline":
        entries = result.get("entries", [])
        steps = [e.get("action") or e.get("message") for e in entries]
        return f"{result.get('release_id')} ({result.get('lifecycle_state')}): " + " -> ".join(
            str(s) for s in steps[-12:]
        )
    if tool == "diagnose_target":
        parts = []
        for name, d in result.get("services", {}).items():
            tail = (d.get("events") or d.get("logs") or ["no events"])[-1]
            parts.append(f"{name}: {d.get('health')}; last: {tail}")
        return "; ".join(parts) or "Nothing to report."
    if tool == "verify_audit":
        if result.get("ok"):
            return f"The audit chain is intact ({result.get('checked')} events)."
        return (
            f"The audit chain is broken at event {result.get('first_broken_seq')}: "
            f"{result.get('reason')}"
        )
    if tool in ("approve_releases", "reject_releases"):
        items = result.get("items", [])
        return "; ".join(
            f"{i['release_id']}: {i['lifecycle_state'] if i['ok'] else i['error']['message']}"
            for i in items
        )
    return f"{tool} done."


def _release(result: dict[str, Any], lang: str) -> str:
    preview = result.get("preview") or {}
    diff = "; ".join(_diff_lines(preview.get("diff", {}))) or "no change"
    risk = (preview.get("risk") or {}).get("level", "?")
    where = f"{result.get('project')}/{result.get('environment')}"
    if lang == "zh":
        simulated_zh = "（模拟）" if result.get("simulated") else ""
        state = result.get("lifecycle_state")
        return f"{result.get('id')}（{where}{simulated_zh}）状态 {state}：{diff}。风险 {risk}。"
    simulated = " (simulated)" if result.get("simulated") else ""
    return (
        f"{result.get('id')} on {where}{simulated} is {result.get('lifecycle_state')}: "
        f"{diff}. Risk {risk}."
    )


def _freeze_line(freeze: dict[str, Any], lang: str) -> str:
    where = f"{freeze.get('project')}/{freeze.get('environment') or '*'}"
    until = str(freeze.get("until", ""))[:16].replace("T", " ")
    if lang == "zh":
        return f"{where} 冻结至 {until} UTC（{freeze.get('created_by')}：{freeze.get('reason')}）"
    return f"{where} frozen until {until} UTC by {freeze.get('created_by')}: {freeze.get('reason')}"


def _freezes(tool: str, result: dict[str, Any], lang: str) -> str:
    """What a freeze tool did or found, one line."""
    if tool == "declare_freeze":
        return _freeze_line(result, lang) + ("。" if lang == "zh" else ".")
    items = result.get("items", [])
    if tool == "lift_freeze":
        lifted = ", ".join(
            f"#{f.get('id')} {f.get('project')}/{f.get('environment') or '*'}" for f in items
        )
        still = "; ".join(result.get("still_frozen", []))
        if lang == "zh":
            text = f"已解冻：{lifted}。" if items else "没有需要解冻的冻结。"
            return text + (f" 仍然冻结：{still}" if still else "")
        text = f"Lifted {lifted}." if items else "Nothing was frozen there."
        return text + (f" Still frozen: {still}" if still else "")
    if not items:
        return "当前没有冻结。" if lang == "zh" else "Nothing is frozen."
    return "; ".join(_freeze_line(f, lang) for f in items[:10])
