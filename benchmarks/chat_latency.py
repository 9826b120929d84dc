"""Chat turn and approval-card fan-out against the least the same work can cost, one run.

For each database (SQLite file, then a throwaway PostgreSQL cluster) the seeded app serves in
its OWN process under uvicorn (rules planner, simulated runtime, the same uvicorn settings as
`shipdeck serve`), with a few bare endpoints added for the baselines; this process is only the
client (asyncio, websockets + httpx), so the two never share an interpreter lock.

- chat turn: "what's running in shop prod" sent -> `tool_result` / `assistant_message`
  received, against a WebSocket round trip whose handler does one indexed SELECT and one
  committed INSERT on the same database (own engine, same engine settings, statements built
  once as shipdeck's are; the least any turn can do). The two alternate in blocks of 10 (see
  `chat_turns`). Goal: p50 <= 3x.
- card fan-out: `POST /api/v1/tools/submit_release` sent -> the approval card received in
  each of 100 approver sessions (per session; the submit also closes the previous release's
  100 cards, which it supersedes), against the same frames pushed to 100 sessions by a bare
  hub (POST -> a thread hands pre-encoded frames to each socket's writer). Goal: p99 <= 100 ms.
- card close: `approve_release` sent -> the voided card received in the 99 other sessions.

The PostgreSQL cluster is the test suite's throwaway one (fsync off). Figures depend on the
machine; compare the ratios, which are measured side by side.

    python -m benchmarks.chat_latency [--turns 200] [--approvers 100] [--releases 10]
        [--databases sqlite postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import threading
import time
from contextlib import AbstractContextManager
from typing import Any

import httpx2 as httpx
from fastapi import WebSocket, WebSocketDisconnect  # module level: route annotations resolve
from websockets.asyncio.client import ClientConnection, connect

from benchmarks.serving import database, process

QUESTION = "what's running in shop prod"
BLOCK = 10  # turns of one kind in a row, when chat and baseline turns alternate


def pct(values: list[float], q: int) -> float:
    """The q-th percentile (inclusive method)."""
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


# ---------------------------------------------------------------------------- server process


def serve_main(port: int) -> None:
    """The app as `shipdeck serve` builds it, plus the bare baselines (runs in its own process)."""
    import uvicorn
    from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, insert, select
    from starlette.concurrency import run_in_threadpool

    from api.app import create_app
    from api.serving import server_config, settle_heap
    from api.wiring import Services
    from core.config import get_settings
    from core.db import make_engine
    from core.identity.models import User

    settings = get_settings()
    services = Services.build(settings)
    app = create_app(settings, services)
    bare = make_engine(settings.database_url)  # its own engine and pool, same settings
    turns = Table(
        "bench_turns",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("user_id", Integer),
        Column("text", String(4000)),
    )
    turns.metadata.create_all(bare)

    # Built once, as shipdeck's own hot statements are: the least a turn's SQL can cost.
    who = select(User.id).where(User.name == bindparam("name"))
    said = insert(turns).values(user_id=bindparam("user_id"), text=bindparam("text"))

    def select_insert(text: str) -> int:
        with bare.begin() as connection:
            user_id = connection.execute(who, {"name": "alice"}).scalar_one()
            connection.execute(said, {"user_id": user_id, "text": text})
        return int(user_id)

    @app.websocket("/bench/echo")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.send_text(await websocket.receive_text())
        except WebSocketDisconnect:
            pass

    @app.websocket("/bench/turn")
    async def turn(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                frame = json.loads(await websocket.receive_text())
                user_id = await run_in_threadpool(select_insert, frame["text"])
                reply = {"type": "assistant_message", "text": frame["text"], "user": user_id}
                await websocket.send_text(json.dumps(reply))
        except WebSocketDisconnect:
            pass

    sockets: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Queue[str]]] = {}
    lock = threading.Lock()

    @app.websocket("/bench/hub")
    async def hub(websocket: WebSocket) -> None:
        await websocket.accept()
        queue: asyncio.Queue[str] = asyncio.Queue()
        with lock:
            sockets[id(queue)] = (asyncio.get_running_loop(), queue)

        async def writer() -> None:
            while True:
                await websocket.send_text(await queue.get())

        writing = asyncio.create_task(writer())
        try:
            while True:
                await websocket.receive_text()
        except WebSocketDisconnect:
            pass
        finally:
            with lock:
                sockets.pop(id(queue), None)
            writing.cancel()

    @app.post("/bench/hub/push", status_code=204)
    def push(frames: list[dict[str, Any]]) -> None:
        texts = [json.dumps(f, ensure_ascii=False) for f in frames]  # encoded once, like ours
        with lock:
            targets = list(sockets.values())
        for loop, queue in targets:
            for text in texts:
                loop.call_soon_threadsafe(queue.put_nowait, text)

    @app.get("/bench/ready")
    def ready() -> dict[str, bool]:
        return {"ok": True}

    settle_heap()  # as `shipdeck serve` does after start-up
    config = server_config(app, settings, host="127.0.0.1", port=port, log_level="warning")
    uvicorn.Server(config).run()


# ---------------------------------------------------------------------------- setup


def seed(url: str, key: str, approvers: list[str]) -> dict[str, str]:
    """Migrate and load shop (prod needs one approver's approval); tokens by user name."""
    from api.wiring import Services
    from core.config import Settings
    from core.identity.service import ensure_user, issue_token
    from core.permissions import SYSTEM
    from core.targets.service import load_declaration, parse_declaration

    services = Services.build(Settings(database_url=url, audit_key=key))
    services.migrate()
    declaration = f"""
projects:
  - name: shop
    services: [web, api, worker]
    requesters: [alice]
    approvers: [{", ".join(approvers)}]
    targets:
      - {{environment: prod, runtime: sandbox, images: {{web: shop/web:1.0.0}}}}
"""
    with services.sessions() as session:
        load_declaration(session, actor=SYSTEM, declaration=parse_declaration(declaration))
        tokens = {
            name: issue_token(session, ensure_user(session, name)) for name in ["alice", *approvers]
        }
        session.commit()
    services.close()
    return tokens


def server(url: str, key: str) -> AbstractContextManager[str]:
    """The app in its own process; yields its base URL once it answers."""
    env = {"SHIPDECK_AUDIT_KEY": key, "SHIPDECK_MIGRATE_ON_START": "false"}
    return process(["-m", "benchmarks.chat_latency", "--serve"], url, "/bench/ready", env)


# ---------------------------------------------------------------------------- client


async def _round_trip(ws: ClientConnection) -> float:
    start = time.perf_counter()
    await ws.send(json.dumps({"type": "user_message", "text": QUESTION}))
    await ws.recv()
    return (time.perf_counter() - start) * 1000


async def round_trips(address: str, path: str, n: int) -> list[float]:
    """n round trips on a bare endpoint (after 20 to warm up), in ms."""
    async with connect(f"ws://{address}{path}") as ws:
        samples = [await _round_trip(ws) for _ in range(n + 20)]
    return samples[20:]


async def _chat_turn(ws: ClientConnection) -> tuple[float, float] | None:
    """One chat turn: ms to the first `tool_result` and to `assistant_message` (None if it
    read nothing: not the turn being measured)."""
    start = time.perf_counter()
    await ws.send(json.dumps({"type": "user_message", "text": QUESTION}))
    got_result = None
    while True:
        frame = json.loads(await ws.recv())
        if frame["type"] == "tool_result" and got_result is None:
            got_result = time.perf_counter()
        if frame["type"] == "assistant_message":
            if got_result is None:
                return None
            return (got_result - start) * 1000, (time.perf_counter() - start) * 1000


async def chat_turns(
    address: str, token: str, n: int
) -> tuple[list[float], list[float], list[float]]:
    """n chat turns and n baseline turns in alternating blocks of BLOCK, back to back within a
    block, so both meet the machine in the same states: ms to the first `tool_result`, to
    `assistant_message`, and the baseline's round trips.

    The first request of each block is not counted: what the server still did after the other
    side's last answer (returning from its worker thread, waking the socket's reader) lands on
    it. The first block of each is warm-up.
    """
    to_result, to_message, floor = [], [], []
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        connect(f"ws://{address}/api/v1/chat", additional_headers=headers) as ws,
        connect(f"ws://{address}/bench/turn") as bare,
    ):
        await ws.recv()  # session
        for block in range(-(-n // BLOCK) + 1):
            baseline = [await _round_trip(bare) for _ in range(BLOCK + 1)]
            turns = [await _chat_turn(ws) for _ in range(BLOCK + 1)]
            if block:
                floor += baseline[1:]
                to_result += [turn[0] for turn in turns[1:] if turn is not None]
                to_message += [turn[1] for turn in turns[1:] if turn is not None]
    return to_result[:n], to_message[:n], floor[:n]


async def wait_card(
    ws: ClientConnection, release_id: str, state: str, seen: list[dict[str, Any]] | None = None
) -> float:
    """When this session receives the release's card in `state` (frames kept in `seen`)."""
    while True:
        frame = json.loads(await ws.recv())
        if seen is not None:
            seen.append(frame)
        card = frame.get("card") or {}
        if frame["type"] == "card" and card["release_id"] == release_id and card["state"] == state:
            return time.perf_counter()


async def fan_out(
    address: str, tokens: dict[str, str], approvers: list[str], releases: int
) -> dict[str, Any]:
    """Submit -> open card in every session; approve -> card closed in every other session."""
    opened: list[float] = []
    closed: list[float] = []
    submits: list[float] = []
    frames: list[dict[str, Any]] = []
    sockets = []
    for name in approvers:
        ws = await connect(
            f"ws://{address}/api/v1/chat",
            additional_headers={"Authorization": f"Bearer {tokens[name]}"},
            max_queue=None,
        )
        await ws.recv()  # session
        sockets.append(ws)
    alice = {"Authorization": f"Bearer {tokens['alice']}"}
    decider = {"Authorization": f"Bearer {tokens[approvers[0]]}"}
    async with httpx.AsyncClient(base_url=f"http://{address}", timeout=60) as client:
        try:
            for i in range(releases + 1):  # the first round warms up
                body = {"project": "shop", "environment": "prod"}
                body["changes"] = {"web": {"image_tag": f"9.{i}.0"}}  # type: ignore[assignment]
                made = await client.post("/api/v1/tools/preview_release", json=body, headers=alice)
                made.raise_for_status()
                rid = made.json()["id"]
                seen: list[dict[str, Any]] = []
                waits = [
                    wait_card(ws, rid, "open", seen if n == 0 else None)
                    for n, ws in enumerate(sockets)
                ]
                started = time.perf_counter()
                submit = asyncio.create_task(
                    client.post(
                        "/api/v1/tools/submit_release", json={"release_id": rid}, headers=alice
                    )
                )
                arrived = await asyncio.gather(*waits)
                response = await submit
                response.raise_for_status()
                if i == 0:
                    continue
                submits.append(float(response.elapsed.total_seconds() * 1000))
                opened += [(t - started) * 1000 for t in arrived]
                frames = seen  # everything session 0 got between submit and its card
                started = time.perf_counter()
                approve = asyncio.create_task(
                    client.post(
                        "/api/v1/tools/approve_release", json={"release_id": rid}, headers=decider
                    )
                )
                arrived = await asyncio.gather(*(wait_card(ws, rid, "void") for ws in sockets[1:]))
                (await approve).raise_for_status()
                closed += [(t - started) * 1000 for t in arrived]
        finally:
            for ws in sockets:
                await ws.close()
    return {"opened": opened, "closed": closed, "submits": submits, "frames": frames}


async def bare_hub(
    address: str, sessions: int, frames: list[dict[str, Any]], rounds: int
) -> list[float]:
    """The same frames pushed to as many sessions by the bare hub: ms to the last frame."""
    samples: list[float] = []
    sockets = [await connect(f"ws://{address}/bench/hub", max_queue=None) for _ in range(sessions)]
    marker = json.dumps(frames[-1], ensure_ascii=False)

    async def last(ws: ClientConnection) -> float:
        while True:
            if await ws.recv() == marker:
                return time.perf_counter()

    async with httpx.AsyncClient(base_url=f"http://{address}", timeout=60) as client:
        try:
            for i in range(rounds + 1):
                started = time.perf_counter()
                pushed = asyncio.create_task(client.post("/bench/hub/push", json=frames))
                arrived = await asyncio.gather(*(last(ws) for ws in sockets))
                (await pushed).raise_for_status()
                if i:
                    samples += [(t - started) * 1000 for t in arrived]
        finally:
            for ws in sockets:
                await ws.close()
    return samples


async def measure(
    address: str, tokens: dict[str, str], approvers: list[str], args: Any
) -> dict[str, Any]:
    """Every measurement of one database, baselines interleaved with the product's runs."""
    result: dict[str, Any] = {}
    result["echo"] = await round_trips(address, "/bench/echo", args.turns)
    result["tool_result"], result["message"], result["floor"] = await chat_turns(
        address, tokens["alice"], args.turns
    )
    fan = await fan_out(address, tokens, approvers, args.releases)
    result.update(fan)
    result["bare_hub"] = await bare_hub(address, len(approvers), fan["frames"], args.releases)
    return result


def report(kind: str, r: dict[str, Any], args: Any) -> None:
    """Print one database's table and its goals."""
    print(
        f"\n{kind}: {args.turns} chat turns; fan-out to {args.approvers} sessions"
        f" x {args.releases} releases"
    )
    print(f"  {'':<52}{'p50 ms':>9}{'p99 ms':>9}")
    rows = [
        ("WebSocket echo (transport floor)", r["echo"]),
        ("baseline turn: indexed SELECT + committed INSERT", r["floor"]),
        ("chat turn: message -> tool_result", r["tool_result"]),
        ("chat turn: message -> assistant_message", r["message"]),
        ("submit_release over REST (response)", r["submits"]),
        (f"fan-out: submit -> open card, {args.approvers} sessions", r["opened"]),
        ("baseline: bare hub pushes the same frames", r["bare_hub"]),
        (f"close: approve -> void card, {args.approvers - 1} sessions", r["closed"]),
    ]
    for name, values in rows:
        print(f"  {name:<52}{pct(values, 50):>9.2f}{pct(values, 99):>9.2f}")
    turn = pct(r["message"], 50) / pct(r["floor"], 50)
    fan99 = pct(r["opened"], 99)
    print(f"  chat turn p50 / baseline turn p50: {turn:.1f}x (goal <= 3x)")
    print(
        f"  fan-out p99 {fan99:.0f} ms (goal <= 100 ms); "
        f"p50/p99 vs bare hub {pct(r['opened'], 50) / pct(r['bare_hub'], 50):.1f}x / "
        f"{fan99 / pct(r['bare_hub'], 99):.1f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--approvers", type=int, default=100)
    parser.add_argument("--releases", type=int, default=10)
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_main(args.serve)
        return
    approvers = [f"a{i:03d}" for i in range(args.approvers)]
    print(
        "chat over WebSocket, rules planner; server in its own process, this process the client;"
        f" {os.cpu_count()} CPUs"
    )
    for kind in args.databases:
        with database(kind) as url:
            key = secrets.token_hex(32)
            tokens = seed(url, key, approvers)
            with server(url, key) as base:
                address = base.removeprefix("http://")
                results = asyncio.run(measure(address, tokens, approvers, args))
        report(kind, results, args)


if __name__ == "__main__":
    main()
