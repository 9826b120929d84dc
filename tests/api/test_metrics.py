"""`GET /metrics`: Prometheus text behind a scrape token of its own; labels stay bounded
whatever callers send; tool calls are counted per door and outcome (both databases)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from tests.api.conftest import Api
from tests.conftest import World

TOKEN = "scrape-" + "k" * 25

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def scraping(world: World) -> Iterator[None]:
    """The world's server with a scrape token (restored after: the services are shared)."""
    services = world.services
    kept = services.settings
    services.settings = kept.model_copy(update={"metrics_token": SecretStr(TOKEN)})
    try:
        yield
    finally:
        services.settings = kept


def parsed(text: str) -> Samples:
    """Every sample of a scrape's text, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(api: Api) -> Samples:
    """Every sample of one scrape, by name and labels."""
    answer = api.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return parsed(answer.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def series(samples: Samples, name: str) -> set[frozenset[tuple[str, str]]]:
    return {labels for (n, labels) in samples if n == name}


def test_metrics_are_off_until_a_scrape_token_is_set(api: Api) -> None:
    for user in (None, "admin"):  # a user's token, even an admin's, does not turn them on
        answer = api.get("/metrics", user=user)
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "not_found"
        assert "SHIPDECK_METRICS_TOKEN" in answer.json()["error"]["message"]


@pytest.mark.usefixtures("scraping")
def test_only_the_scrape_token_reads_them(api: Api, world: World) -> None:
    refused: list[Mapping[str, str] | Mapping[bytes, bytes]] = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {b"Authorization": ("Bearer " + "🚀" * 10_000).encode()},  # raw UTF-8 bytes
        {"Authorization": f"Bearer {world.tokens['admin']}"},  # a user's token is not it
    ]
    for headers in refused:
        answer = api.client.get("/metrics", headers=headers)
        assert answer.status_code == 401, headers
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.json()["error"]["code"] == "not_authenticated"
        assert TOKEN not in answer.text
    assert api.client.get("/metrics", headers={"Authorization": f"bearer  {TOKEN} "}).is_success


@pytest.mark.usefixtures("scraping")
def test_labels_stay_bounded_whatever_paths_callers_send(api: Api) -> None:
    before = scrape(api)
    hostile = [
        f"/{uuid.uuid4()}",
        "/" + "🚀" * 2_500,
        "/api/v1/" + "x" * 10_000,
        "/api/v1/releases/R-1/../../etc/passwd",
        "/%00%ff",
    ] * 20
    for path in hostile:
        assert api.get(path).status_code == 404
    ids = [f"R-{n}" for n in range(900_000, 900_050)]
    for rid in ids:
        assert api.get(f"/api/v1/releases/{rid}").status_code == 404
    after = scrape(api)
    new = series(after, "shipdeck_http_requests_total") - series(
        before, "shipdeck_http_requests_total"
    )
    assert len(new) <= 2, new  # the unmatched 404s and the release route's 404, at most
    labels = " ".join(v for s in series(after, "shipdeck_http_requests_total") for _, v in s)
    assert "🚀" not in labels and "900001" not in labels and "passwd" not in labels
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    name = "shipdeck_http_requests_total"
    assert value(after, name, **unmatched) - value(before, name, **unmatched) == len(hostile)
    route = {"method": "GET", "route": "/api/v1/releases/{release_id}", "status": "404"}
    assert value(after, name, **route) - value(before, name, **route) == len(ids)
    timed = {"method": "GET", "route": "/api/v1/releases/{release_id}"}
    count = "shipdeck_http_request_duration_seconds_count"
    assert value(after, count, **timed) - value(before, count, **timed) == len(ids)
    # a body refused before routing (413) is counted too, without a route
    big = api.post("/api/v1/tools/get_release", content=b"x" * 100_000)
    assert big.status_code == 413
    refused = {"method": "POST", "route": "unmatched", "status": "413"}
    assert value(scrape(api), name, **refused) - value(after, name, **refused) == 1
    # the scrape that answers is the one request in flight
    assert value(after, "shipdeck_http_requests_in_flight") == 1


@pytest.mark.usefixtures("scraping")
def test_tool_calls_are_counted_by_door_and_outcome(api: Api, world: World) -> None:
    before = scrape(api)
    found = api.post("/api/v1/tools/get_release", json={"release_id": "R-999999"})
    assert found.status_code == 404
    bad = api.post("/api/v1/tools/get_release", json={"release_id": "🚀" * 10_000})
    assert bad.status_code == 422  # refused by the door's schema: no tool call
    made = api.post(
        "/api/v1/tools/preview_release",
        json={"project": "shop", "environment": "dev", "changes": {"web": {"image_tag": "9.9"}}},
    )
    assert made.status_code == 200, made.text
    early = api.post("/api/v1/tools/approve_release", json={"release_id": made.json()["id"]})
    assert early.status_code in (403, 409), early.text  # not submitted: refused by core
    auth = {"Authorization": f"Bearer {world.tokens['alice']}"}
    with api.client.websocket_connect("/api/v1/chat", headers=auth) as socket:
        assert socket.receive_json()["type"] == "session"
        during = scrape(api)
        socket.send_json({"type": "user_message", "text": "what's running in shop prod"})
        while socket.receive_json()["type"] != "assistant_message":
            pass
    after = scrape(api)

    def counted(tool: str, channel: str, outcome: str) -> float:
        labels = {"tool": tool, "channel": channel, "outcome": outcome}
        name = "shipdeck_tool_calls_total"
        return value(after, name, **labels) - value(before, name, **labels)

    assert counted("get_release", "rest", "not_found") == 1
    assert counted("get_release", "rest", "invalid_input") == 0
    assert counted("approve_release", "rest", early.json()["error"]["code"]) == 1
    assert counted("preview_release", "rest", "ok") == 1
    assert counted("target_status", "chat", "ok") == 1
    assert value(during, "shipdeck_chat_sockets") == value(before, "shipdeck_chat_sockets") + 1
    assert value(after, "shipdeck_chat_sockets") == value(before, "shipdeck_chat_sockets")
    seconds = "shipdeck_tool_call_duration_seconds_count"
    assert (
        value(after, seconds, tool="get_release") - value(before, seconds, tool="get_release") == 1
    )


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.usefixtures("scraping")
def test_a_sweeper_pass_is_timed(api: Api, world: World) -> None:
    before = scrape(api)
    world.services.runner.sweep()
    after = scrape(api)
    name = "shipdeck_sweeper_pass_seconds_count"
    assert value(after, name) - value(before, name) == 1
    assert value(after, "shipdeck_sweeper_failures_total") == value(
        before, "shipdeck_sweeper_failures_total"
    )


def _families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.usefixtures("scraping")
def test_every_metric_is_documented_and_typed(api: Api) -> None:
    answer = api.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    families = {n: f for n, f in _families(answer.text).items() if n.startswith("shipdeck_")}
    assert {
        "shipdeck_http_requests",
        "shipdeck_http_request_duration_seconds",
        "shipdeck_http_requests_in_flight",
        "shipdeck_chat_sockets",
        "shipdeck_tool_calls",
        "shipdeck_tool_call_duration_seconds",
        "shipdeck_turn_wait_seconds",
        "shipdeck_turns_waiting",
        "shipdeck_sqlite_write_wait_seconds",
        "shipdeck_hub_event_seconds",
        "shipdeck_db_retries",
        "shipdeck_sweeper_pass_seconds",
        "shipdeck_sweeper_failures",
    } <= set(families)
    assert all(
        f.documentation and f.type in {"counter", "gauge", "histogram"} for f in families.values()
    )


_WORKER = """
import os, sys
from core.metrics import CHAT_SOCKETS, TOOL_CALLS
CHAT_SOCKETS.inc()
TOOL_CALLS.labels("get_release", "rest", "ok").inc()
os._exit(0)  # killed with a socket open: no clean-up of its own
"""
_SCRAPER = "from api.metrics import exposition; print(exposition().decode())"


def test_workers_share_counts_and_a_dead_workers_gauges_stop_counting(tmp_path: Path) -> None:
    """Multiprocess mode, as `serve --workers` runs it: two workers that die, one scrape."""
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": root}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", _WORKER], env=env, check=True, timeout=60)
    scraped = subprocess.run(
        [sys.executable, "-c", _SCRAPER], env=env, check=True, timeout=60, capture_output=True
    ).stdout.decode()
    samples = parsed(scraped)
    ok = {"tool": "get_release", "channel": "rest", "outcome": "ok"}
    assert value(samples, "shipdeck_tool_calls_total", **ok) == 2  # counted by both, kept
    assert value(samples, "shipdeck_chat_sockets") == 0  # their sockets died with them


def test_a_token_read_from_a_file_works_and_one_no_header_can_carry_is_refused() -> None:
    from core.config import Settings

    # a Secret made from a file ends in a newline; Prometheus strips the file it sends
    read = Settings(metrics_token=SecretStr(TOKEN + "\n")).metrics_token
    assert read is not None and read.get_secret_value() == TOKEN
    assert Settings(metrics_token=SecretStr(" \n\t ")).metrics_token is None  # empty: off
    for unusable in ("ключ-для-метрик-prometheus", "short", "sixteen chars with spaces", "🚀" * 20):
        with pytest.raises(ValueError, match="16 printable ASCII") as refused:
            Settings(metrics_token=SecretStr(unusable))
        assert unusable not in str(refused.value)  # a secret is named, never echoed


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.usefixtures("scraping")
def test_the_mcp_door_and_static_files_have_routes_of_their_own(api: Api) -> None:
    before = scrape(api)
    assert api.client.post("/mcp", json={}).status_code == 401
    assert api.client.get("/static/swagger/swagger-ui.css").status_code == 200
    assert api.client.get(f"/static/{uuid.uuid4()}.js").status_code == 404
    after = scrape(api)
    name = "shipdeck_http_requests_total"
    for method, route, status in [
        ("POST", "/mcp", "401"),
        ("GET", "/static/swagger", "200"),
        ("GET", "/static", "404"),
    ]:
        labels = {"method": method, "route": route, "status": status}
        assert value(after, name, **labels) - value(before, name, **labels) == 1, labels


@pytest.mark.usefixtures("scraping")
def test_the_hubs_passes_are_timed_from_each_change(api: Api, world: World) -> None:
    before = scrape(api)
    made = api.post(
        "/api/v1/tools/preview_release",
        json={"project": "shop", "environment": "prod", "changes": {"web": {"image_tag": "9.8"}}},
    )
    assert made.status_code == 200, made.text
    submitted = api.post("/api/v1/tools/submit_release", json={"release_id": made.json()["id"]})
    assert submitted.status_code == 200, submitted.text
    count, total = "shipdeck_hub_event_seconds_count", "shipdeck_hub_event_seconds_sum"
    # on PostgreSQL the events reach the hub through NOTIFY: drained once they have arrived
    deadline = time.monotonic() + 10
    while True:
        world.services.hub.drain()
        after = scrape(api)
        if value(after, count) - value(before, count) >= 2 or time.monotonic() > deadline:
            break
    # the submit's update and its request for approval, at least
    assert value(after, count) - value(before, count) >= 2
    assert 0 < value(after, total) - value(before, total) < 30
    infinite = "shipdeck_hub_event_seconds_bucket"
    assert value(after, infinite, le="+Inf") == value(after, count)


def test_an_event_from_a_clock_ahead_or_without_a_zone_is_timed_sanely() -> None:
    from datetime import UTC, datetime, timedelta

    from agent.hub import _age
    from core.events import LiveEvent

    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

    def event(at: datetime) -> LiveEvent:
        fields = {"release_id": "R-1", "project": "shop", "environment": "prod"}
        return LiveEvent(kind="release_update", lifecycle_state="approved", at=at, **fields)

    assert _age(event(now - timedelta(seconds=2)), now) == 2.0
    assert _age(event(now + timedelta(seconds=5)), now) == 0.0  # another replica runs ahead
    naive = datetime(2026, 11, 28, 11, 59, 59, tzinfo=UTC).replace(tzinfo=None)
    assert _age(event(naive), now) == 1.0  # a time without a zone is UTC


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.usefixtures("scraping")
def test_a_long_poll_is_timed_apart_from_its_routes_plain_reads(api: Api, world: World) -> None:
    made = api.post(
        "/api/v1/tools/preview_release",
        json={"project": "shop", "environment": "dev", "changes": {"web": {"image_tag": "9.7"}}},
    )
    rid = made.json()["id"]
    before = scrape(api)
    params = {"wait": 0.2, "while_state": ["previewed"]}  # stays previewed: waits it out
    assert api.get(f"/api/v1/releases/{rid}", params=params).status_code == 200
    assert api.get(f"/api/v1/releases/{rid}").status_code == 200
    after = scrape(api)
    count = "shipdeck_http_request_duration_seconds_count"
    total = "shipdeck_http_request_duration_seconds_sum"
    waiting = {"method": "GET", "route": "/api/v1/releases/{release_id}?wait"}
    plain = {"method": "GET", "route": "/api/v1/releases/{release_id}"}
    assert value(after, count, **waiting) - value(before, count, **waiting) == 1
    assert value(after, total, **waiting) - value(before, total, **waiting) >= 0.2
    assert value(after, count, **plain) - value(before, count, **plain) == 1
    assert value(after, total, **plain) - value(before, total, **plain) < 0.2


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.usefixtures("scraping")
def test_every_metric_the_readme_names_is_served(api: Api) -> None:
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    part = readme.split("**7. Metrics.**", 1)[1].split("Tested: `tests/deploy`", 1)[0]
    # a counter's samples end in _total, a histogram's in _bucket, _count and _sum
    named = {
        re.sub(r"_(total|bucket|count|sum)$", "", name)
        for name in re.findall(r"shipdeck_[a-z_]+[a-z]", part)
    }
    answer = api.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    served = {family.name for family in text_string_to_metric_families(answer.text)}
    assert len(named) >= 10 and named <= served, named - served
