"""An OpenAI-compatible server of shipdeck's own that answers each eval case with its calls.

A perfect model, on the real protocol: Chat Completions over SSE with parallel `tool_calls`
(arguments streamed in pieces), a usage chunk when `stream_options.include_usage` asks for one,
and `[DONE]`. Running `shipdeck eval --planner llm` against it must score 1.0: that proves the
harness and the llm path end to end, whatever a real model would have said.

    python -m evals.oracle --port 8099 evals/datasets/tune.jsonl evals/datasets/heldout.jsonl
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from evals.runner import load_cases
from evals.scorers import Case

MODEL = "shipdeck-oracle"
QUESTION = "Which one do you mean? Please name it."
DONE = "Done: the results are above."


class Oracle:
    """Knows every case's expected calls, by utterance."""

    def __init__(self, cases: Iterable[Case]) -> None:
        self.cases = {case.utterance: case for case in cases}
        self.requests: list[dict[str, Any]] = []

    def answer(self, body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        """(text, calls) for a request: the case's calls first, a short text once they ran."""
        messages = body.get("messages", [])
        last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
        if last_user < 0:
            return "Hello.", []
        if any(m.get("role") in ("tool", "assistant") for m in messages[last_user + 1 :]):
            return DONE, []
        case = self.cases.get(_content(messages[last_user]))
        if case is None:
            return "I have no answer for that.", []
        if case.expected:
            return "", [{"name": e["tool"], "arguments": e.get("args", {})} for e in case.expected]
        return (QUESTION if case.clarify else "Nothing to do."), []

    def app(self) -> Starlette:
        """The ASGI app: /v1/chat/completions and /v1/models."""

        async def completions(request: Request) -> Response:
            body = await request.json()
            self.requests.append(body)
            text, calls = self.answer(body)
            prompt_tokens = len(json.dumps(body.get("messages", []), ensure_ascii=False)) // 4
            prompt_tokens += len(json.dumps(body.get("tools", []))) // 4
            if not body.get("stream"):
                return JSONResponse(_completion(text, calls, prompt_tokens))
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(
                _sse(text, calls, prompt_tokens if usage else None),
                media_type="text/event-stream",
            )

        async def models(request: Request) -> Response:
            return JSONResponse({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

        return Starlette(
            routes=[
                Route("/v1/chat/completions", completions, methods=["POST"]),
                Route("/v1/models", models, methods=["GET"]),
            ]
        )


def _content(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content or "")


def _chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> str:
    body: dict[str, Any] = {
        "id": "chatcmpl-oracle",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": MODEL,
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


async def _sse(
    text: str, calls: list[dict[str, Any]], prompt_tokens: int | None
) -> AsyncIterator[str]:
    pieces = 1
    yield _chunk({"role": "assistant", "content": None if calls else ""})
    for index, call in enumerate(calls):
        arguments = json.dumps(call["arguments"], ensure_ascii=False)
        half = len(arguments) // 2
        opening = {"index": index, "id": f"call_{uuid.uuid4().hex[:8]}", "type": "function"}
        opening["function"] = {"name": call["name"], "arguments": ""}
        yield _chunk({"tool_calls": [opening]})
        for part in (arguments[:half], arguments[half:]):
            yield _chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]})
            pieces += 1
    for start in range(0, len(text), 8):
        yield _chunk({"content": text[start : start + 8]})
        pieces += 1
    yield _chunk({}, "tool_calls" if calls else "stop")
    if prompt_tokens is not None:
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": pieces,
            "total_tokens": prompt_tokens + pieces,
        }
        yield _chunk(None, usage=usage)
    yield "data: [DONE]\n\n"


def _completion(text: str, calls: list[dict[str, Any]], prompt_tokens: int) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = [
            {
                "id": f"call_{index}",
                "type": "function",
                "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
            }
            for index, c in enumerate(calls)
        ]
    return {
        "id": "chatcmpl-oracle",
        "object": "chat.completion",
        "created": 0,
        "model": MODEL,
        "choices": [
            {"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": 1,
            "total_tokens": prompt_tokens + 1,
        },
    }


@contextmanager
def serve(oracle: Oracle, port: int = 0) -> Iterator[str]:
    """Run the oracle on a loopback port in a thread; yields its base URL (…/v1)."""
    # The socket listens before the server thread starts: connections wait in the backlog,
    # so there is nothing to wait for.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    config = uvicorn.Config(oracle.app(), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def main() -> None:
    """Serve the oracle for the given datasets until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("datasets", nargs="+", type=Path)
    parser.add_argument("--port", type=int, default=8099)
    options = parser.parse_args()
    cases = [case for path in options.datasets for case in load_cases(path)]
    oracle = Oracle(cases)
    sys.stderr.write(f"oracle: {len(oracle.cases)} cases on http://127.0.0.1:{options.port}/v1\n")
    uvicorn.run(oracle.app(), host="127.0.0.1", port=options.port, log_level="warning")


if __name__ == "__main__":
    main()
