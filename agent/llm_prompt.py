"""What the llm planner sends: few tools, compact schemas, the catalog as a short table.

A small model on a CPU pays for every prompt token (the full 20 schemas were ~4,600 tokens), so
a message only gets the tools of the intent families it can need, each with the first sentence
of its description and a schema stripped of titles, defaults and per-field prose.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from agent.planner import Catalog
from tools.registry import REGISTRY

# Intent families: words (EN/ZH, lower case, `|`-separated) -> tools. No match: every tool.
FAMILIES: dict[str, tuple[str, str]] = {
    "change": (
        "deploy|ship|release|roll out|rollout|upgrade|update|bump|scale|replica|instance|pod"
        "|image|version|promote|部署|发布|上线|升级|更新|扩容|缩容|扩缩|实例|副本|版本",
        "preview_release list_targets target_status",
    ),
    "rollback": (
        "rollback|roll back|roll it back|revert|restore|undo|回滚|恢复|还原",
        "rollback_release list_releases",
    ),
    "lifecycle": (
        "submit|apply|cancel|abort|withdraw|repreview|re-preview|refresh|take over|takeover"
        "|提交|执行|应用|取消|撤回|作废|重新预览|刷新|接手|接管",
        "submit_release apply_release cancel_release repreview_release takeover_approval"
        " get_release",
    ),
    "approval": (
        "approv|reject|decline|lgtm|inbox|waiting|pending|sign off|批准|审批|同意|通过|拒绝"
        "|驳回|打回|待批|批一下",
        "approve_release reject_release approve_releases reject_releases list_approvals"
        " takeover_approval get_release",
    ),
    "desk": (
        "retry|try again|again|freez|frozen|unfreeze|thaw|lift|promot|重试|再试|冻结|解冻|封版"
        "|晋级|推到",
        "retry_release promote_release declare_freeze lift_freeze list_freezes get_release",
    ),
    "status": (
        "status|running|health|state|what's on|what is on|targets|environments|log|diagnos"
        "|error|fail|crash|why|状态|运行|健康|日志|诊断|报错|失败|挂了|环境",
        "target_status list_targets diagnose_target get_release list_releases",
    ),
    "history": (
        "history|timeline|releases|list|show|recent|changed|audit|verify|chain|历史|时间线"
        "|记录|列出|审计|校验|变更",
        "list_releases release_timeline get_release list_audit verify_audit",
    ),
}
DROPPED = {
    "title", "description", "default", "$defs", "examples", "pattern", "format",
    "minLength", "maxLength", "minimum", "maximum", "minProperties", "maxProperties",
}  # fmt: skip
RELEASE_ID = re.compile(r"\b[rR]-?\d+\b")


def tools_for(text: str) -> list[str]:
    """The registry tools a message may need, in registry order (all of them if unsure)."""
    lowered = text.lower()
    wanted: set[str] = set()
    for words, tools in FAMILIES.values():
        if any(word in lowered for word in words.split("|")):
            wanted.update(tools.split())
    if RELEASE_ID.search(text):
        wanted.update(("get_release", "release_timeline"))
    if not wanted:
        return list(REGISTRY)
    return [name for name in REGISTRY if name in wanted]


@cache
def tool_spec(name: str) -> dict[str, Any]:
    """One tool in the Chat Completions `tools` format, compacted."""
    tool = REGISTRY[name]
    schema = tool.input_model.model_json_schema()
    defs = schema.get("$defs", {})
    description = " ".join(tool.description.split()).split(". ")[0].rstrip(".") + "."
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": _compact(schema, defs),
        },
    }


def _compact(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_compact(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _compact(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
    variants = node.get("anyOf")
    if isinstance(variants, list):
        kept = [v for v in variants if v != {"type": "null"}]
        if len(kept) == 1:  # `X | None` is just an optional X
            merged = {k: v for k, v in node.items() if k != "anyOf"}
            merged.update(kept[0] if isinstance(kept[0], dict) else {})
            return _compact(merged, defs)
    # The registry validates every call: limits and patterns only cost the model tokens.
    return {
        key: _compact(value, defs)
        for key, value in node.items()
        if key not in DROPPED and not (key == "additionalProperties" and value is False)
    }


def catalog_table(catalog: Catalog) -> str:
    """The caller's projects as `project | services | environments` lines."""
    lines = ["project | services | environments"]
    for project, services in sorted(catalog.services.items()):
        environments = ", ".join(catalog.environments.get(project, []))
        lines.append(f"{project} | {', '.join(services)} | {environments}")
    return "\n".join(lines)
