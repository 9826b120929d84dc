"""One-paragraph chat text for tool results (the structured result is sent alongside)."""

from __future__ import annotations

from typing import Any

# Lifecycle states, healths and risk levels as the Chinese console names them (api/static/i18n.js).
WORDS_ZH = {
    "previewed": "已预览",
    "pending_approval": "待审批",
    "approved": "已批准",
    "rejected": "已拒绝",
    "cancelled": "已取消",
    "expired": "已过期",
    "applying": "执行中",
    "applied": "已执行",
    "failed": "失败",
    "rolling_back": "回滚中",
    "rolled_back": "已回滚",
    "rollback_failed": "回滚失败",
    "pending": "待处理",
    "void": "已作废",
    "healthy": "健康",
    "unhealthy": "不健康",
    "starting": "启动中",
    "absent": "不存在",
    "unknown": "未知",
    "low": "低",
    "medium": "中",
    "high": "高",
}


def word(value: object, lang: str) -> str:
    """A state, health or risk level in `lang` (as written when there is no translation)."""
    text = str(value)
    return WORDS_ZH.get(text, text) if lang == "zh" else text


def _diff_lines(diff: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    return [
        f"{service} {field}: {change.get('before')} -> {change.get('after')}"
        for service, fields in diff.items()
        for field, change in fields.items()
    ]


def summarize(tool: str, result: dict[str, Any], lang: str = "en") -> str:
    """A short human line for a tool's JSON result, in English or Chinese."""
    zh = lang == "zh"
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
        state = word(result.get("lifecycle_state"), lang)
        release = result.get("id")
        return f"{release} 现在是「{state}」。" if zh else f"{release} is now {state}."
    if tool == "target_status":
        return _status(result, lang)
    if tool == "list_targets":
        items = result.get("items", [])
        listed = ", ".join(f"{t['project']}/{t['environment']} ({t['runtime']})" for t in items)
        if zh:
            return "目标环境：" + (listed or "无")
        return "Targets: " + (listed or "none")
    if tool == "list_approvals":
        return _approvals(result.get("items", []), lang)
    if tool == "list_releases":
        return _releases(result.get("items", []), lang)
    if tool == "release_timeline":
        entries = result.get("entries", [])
        steps = [e.get("action") or e.get("message") for e in entries]
        state = word(result.get("lifecycle_state"), lang)
        return f"{result.get('release_id')} ({state}): " + " -> ".join(str(s) for s in steps[-12:])
    if tool == "diagnose_target":
        return _diagnosis(result, lang)
    if tool == "verify_audit":
        return _verified(result, lang)
    if tool in ("approve_releases", "reject_releases"):
        items = result.get("items", [])
        return "; ".join(
            f"{i['release_id']}: "
            + (word(i["lifecycle_state"], lang) if i["ok"] else i["error"]["message"])
            for i in items
        )
    return f"{tool} 完成。" if zh else f"{tool} done."


def _status(result: dict[str, Any], lang: str) -> str:
    lines = [
        f"{name}: {s.get('image')} x{s.get('replicas')} ({word(s.get('health'), lang)})"
        for name, s in result.get("services", {}).items()
    ]
    where = f"{result.get('project')}/{result.get('environment')}"
    if lang == "zh":
        label = "（模拟）" if result.get("simulated") else ""
        return f"{where}{label}：" + ("；".join(lines) or "没有运行中的服务")
    label = " (simulated)" if result.get("simulated") else ""
    return f"{where}{label}: " + ("; ".join(lines) or "no services running")


def _approvals(items: list[dict[str, Any]], lang: str) -> str:
    if not items:
        return "没有符合条件的审批。" if lang == "zh" else "No approvals match."
    listed = ", ".join(
        f"{i['release_id']} {i['project']}/{i['environment']} ({word(i['state'], lang)})"
        for i in items[:10]
    )
    count = len(items)
    return f"{count} 个审批：{listed}" if lang == "zh" else f"{count} approval(s): {listed}"


def _releases(items: list[dict[str, Any]], lang: str) -> str:
    if not items:
        return "没有符合条件的发布。" if lang == "zh" else "No releases match."
    listed = ", ".join(
        f"{r['id']} {r['project']}/{r['environment']} {word(r['lifecycle_state'], lang)}"
        for r in items[:10]
    )
    count = len(items)
    return f"{count} 个发布：{listed}" if lang == "zh" else f"{count} release(s): {listed}"


def _diagnosis(result: dict[str, Any], lang: str) -> str:
    parts = []
    for name, d in result.get("services", {}).items():
        tail = (d.get("events") or d.get("logs") or ["—"])[-1]
        health = word(d.get("health"), lang)
        zh = f"{name}: {health}；最近：{tail}"
        parts.append(zh if lang == "zh" else f"{name}: {health}; last: {tail}")
    if lang == "zh":
        return "；".join(parts) or "没有可报告的内容。"
    return "; ".join(parts) or "Nothing to report."


def _verified(result: dict[str, Any], lang: str) -> str:
    if lang == "zh":
        if result.get("ok"):
            return f"审计链完整（{result.get('checked')} 条事件）。"
        return f"审计链在第 {result.get('first_broken_seq')} 条事件处断开：{result.get('reason')}"
    if result.get("ok"):
        return f"The audit chain is intact ({result.get('checked')} events)."
    return (
        f"The audit chain is broken at event {result.get('first_broken_seq')}: "
        f"{result.get('reason')}"
    )


def _release(result: dict[str, Any], lang: str) -> str:
    preview = result.get("preview") or {}
    where = f"{result.get('project')}/{result.get('environment')}"
    risk = word((preview.get("risk") or {}).get("level", "?"), lang)
    state = word(result.get("lifecycle_state"), lang)
    if lang == "zh":
        diff = "；".join(_diff_lines(preview.get("diff", {}))) or "没有变化"
        simulated_zh = "（模拟）" if result.get("simulated") else ""
        return f"{result.get('id')}（{where}{simulated_zh}）状态「{state}」：{diff}。风险 {risk}。"
    diff = "; ".join(_diff_lines(preview.get("diff", {}))) or "no change"
    simulated = " (simulated)" if result.get("simulated") else ""
    return f"{result.get('id')} on {where}{simulated} is {state}: {diff}. Risk {risk}."


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
