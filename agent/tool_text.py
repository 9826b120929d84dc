"""Tool calls a model wrote as text instead of `tool_calls`.

Servers without tool-call parsing (llama.cpp without `--jinja`, some Ollama templates) hand the
model's call back as content: a JSON object, fenced JSON, or `<tool_call>` tags. A JSON object
naming a registry tool with an object of arguments is the same proposal a `tool_calls` entry
would be; anything else (including `name(args)` text) is a plain answer.
"""

from __future__ import annotations

import json
import re
from typing import Any

from agent.planner import ToolCall

_DECODER = json.JSONDecoder()
NAME_KEYS = ("name", "tool", "tool_name", "function")
ARG_KEYS = ("arguments", "args", "parameters", "input")
# Where a written tool call may start: an object, a fence or a `<tool_call>` tag.
CALL_START = re.compile(r"[{`<]")


def parse_text_calls(text: str, known: set[str]) -> list[ToolCall]:
    """The tool calls written in `text`, in order; empty when it is a plain answer."""
    calls: list[ToolCall] = []
    position = 0
    while True:
        start = text.find("{", position)
        if start < 0:
            return calls
        try:
            value, end = _DECODER.raw_decode(text, start)
        except ValueError:
            position = start + 1
            continue
        calls.extend(_calls_in(value, known))
        position = end


def _calls_in(value: Any, known: set[str]) -> list[ToolCall]:
    if isinstance(value, list):
        return [call for item in value for call in _calls_in(item, known)]
    if not isinstance(value, dict):
        return []
    if isinstance(value.get("tool_calls"), list):
        return _calls_in(value["tool_calls"], known)
    function = value.get("function")
    if isinstance(function, dict):  # the OpenAI wire shape, written out as text
        return _calls_in(function, known)
    name = next((value[k] for k in NAME_KEYS if isinstance(value.get(k), str)), None)
    if name not in known:
        return []
    raw: Any = next((value[k] for k in ARG_KEYS if k in value), {})
    if isinstance(raw, str):  # arguments as a JSON string, as on the wire
        try:
            raw = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return []
    if not isinstance(raw, dict):
        return []
    return [ToolCall(tool=str(name), args=raw)]


def may_hold_call(text: str) -> bool:
    """Whether streamed text has reached something that may be a written tool call."""
    return CALL_START.search(text) is not None
