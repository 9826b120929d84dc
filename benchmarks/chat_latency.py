"""Chat turn overhead and approval-card fan-out, against a bare WebSocket echo, one run.

The real app serves under uvicorn (SQLite, sandbox runtime, rules planner) with one extra
bare endpoint that echoes WebSocket frames. Measured from a client in this process:
- chat turn: "what's running in shop prod" sent -> `tool_result` received (and the final
  `assistant_message`), vs. an echo round trip;
- fan-out: a release is submitted to prod -> the approval card arrives in each of 100
  connected approver sessions (per-session latency), vs. an echo round trip.

    python -m benchmarks.chat_latency [--turns 200] [--approvers 100] [--releases 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from websockets.asyncio.client import connect

from api.wiring import Services
from core.config import Settings
from core.identity.service import actor_for, ensure_user, issue_token
from core.permissions import SYSTEM
from core.targets.service import load_declaration, parse_declaration
from tests.support.server import running_server
from tools.registry import get_tool


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def echo_round_trips(address: str, n: int) -> list[float]:
    samples = []
    async with connect(f"ws://{address}/bench/echo") as ws:
        for i in range(n + 20):
            start = time.perf_counter()
            await ws.send(json.dumps({"type": "ping", "n": i}))
            await ws.recv()
            if i >= 20:
                samples.append((time.perf_counter() - start) * 1000)
    return samples


async def chat_turns(address: str, token: str, n: int) -> tuple[list[float], list[float]]:
    to_result, to_message = [], []
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(f"ws://{address}/api/v1/chat", additional_headers=headers) as ws:
        await ws.recv()  # session
        for i in range(n + 10):
            start = time.perf_counter()
            await ws.send(
                json.dumps({"type": "user_message", "text": "what's running in shop prod"})
            )
            got_result = None
            while True:
                frame = json.loads(await ws.recv())
                if frame["type"] == "tool_result" and got_result is None:
                    got_result = time.perf_counter()
                if frame["type"] == "assistant_message":
                    break
            if i >= 10 and got_result is not None:
                to_result.append((got_result - start) * 1000)
                to_message.append((time.perf_counter() - start) * 1000)
    return to_result, to_message


async def fan_out(
    address: str, tokens: list[str], submit: Callable[[int], tuple[str, float]], releases: int
) -> list[float]:
    samples: list[float] = []
    sockets = []
    for token in tokens:
        ws = await connect(
            f"ws://{address}/api/v1/chat", additional_headers={"Authorization": f"Bearer {token}"}
        )
        await ws.recv()  # session
        sockets.append(ws)

    async def wait_card(ws: object, release_id: str) -> float:
        while True:
            frame = json.loads(await ws.recv())  # type: ignore[attr-defined]
            if frame["type"] == "card" and frame["card"]["release_id"] == release_id:
                return time.perf_counter()

    try:
        for i in range(releases):
            release_id, started = await asyncio.to_thread(submit, i)
            arrived = await asyncio.gather(*(wait_card(ws, release_id) for ws in sockets))
            samples += [(t - started) * 1000 for t in arrived]
    finally:
        for ws in sockets:
            await ws.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--approvers", type=int, default=100)
    parser.add_argument("--releases", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        services = Services.build(
            Settings(database_url=f"sqlite:///{Path(tmp) / 'chat.db'}"), inline_apply=True
        )
        services.migrate()
        approvers = [f"a{i:03d}" for i in range(args.approvers)]
        declaration = f"""
projects:
  - name: shop
    services: [web, api, worker]
    requesters: [alice]
    approvers: [{", ".join(approvers)}]
    targets:
      - {{environment: prod, runtime: sandbox}}
"""
        with services.sessions() as session:
            load_declaration(session, actor=SYSTEM, declaration=parse_declaration(declaration))
            alice = ensure_user(session, "alice")
            tokens = {
                name: issue_token(session, ensure_user(session, name))
                for name in ["alice", *approvers]
            }
            session.commit()
            alice_actor = actor_for(alice)
        ctx = services.context(alice_actor)

        def submit(i: int) -> tuple[str, float]:
            release = get_tool("preview_release").run(
                ctx,
                {
                    "project": "shop",
                    "environment": "prod",
                    "changes": {"web": {"image_tag": f"9.{i}.0"}},
                },
            )
            started = time.perf_counter()
            get_tool("submit_release").run(ctx, {"release_id": release.id})
            return release.id, started

        def add_echo(app: FastAPI) -> None:
            @app.websocket("/bench/echo")
            async def echo(websocket: WebSocket) -> None:
                await websocket.accept()
                try:
                    while True:
                        await websocket.send_text(await websocket.receive_text())
                except WebSocketDisconnect:
                    pass

        async def run() -> dict[str, list[float]]:
            with running_server(services, add_echo) as address:
                echo = await echo_round_trips(address, args.turns)
                result, message = await chat_turns(address, tokens["alice"], args.turns)
                fan = await fan_out(address, [tokens[a] for a in approvers], submit, args.releases)
                echo_after = await echo_round_trips(address, args.turns)
            return {"echo": echo + echo_after, "result": result, "message": message, "fan": fan}

        results = asyncio.run(run())
        services.close()
    echo50, echo99 = pct(results["echo"], 50), pct(results["echo"], 99)
    print(
        f"chat over WebSocket, rules planner, SQLite; {args.turns} turns; fan-out to "
        f"{args.approvers} approver sessions x {args.releases} releases"
    )
    print(f"  {'':<44}{'p50 ms':>9}{'p99 ms':>9}{'p50 x':>8}{'p99 x':>8}")
    rows = [
        ("bare WebSocket echo round trip", results["echo"]),
        ("chat turn: message -> tool_result", results["result"]),
        ("chat turn: message -> assistant_message", results["message"]),
        (f"approval card fan-out ({args.approvers} sessions)", results["fan"]),
    ]
    for name, values in rows:
        p50, p99 = pct(values, 50), pct(values, 99)
        print(f"  {name:<44}{p50:>9.2f}{p99:>9.2f}{p50 / echo50:>8.1f}{p99 / echo99:>8.1f}")


if __name__ == "__main__":
    main()
