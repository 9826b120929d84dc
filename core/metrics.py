"""The metrics shipdeck exports (`GET /metrics`, Prometheus text format): every one is here.

Labels take bounded values only (a route's template, a tool's name, an error code, a
SQLSTATE), never a caller's input: a label per distinct path or release id would let any
client grow the server's memory and every scrape without bound.

Under `shipdeck serve --workers N` the workers share one directory of metric files
(prometheus_client's multiprocess mode, `PROMETHEUS_MULTIPROC_DIR`): a scrape that reaches
any worker answers for all of them. Gauges say how they add up across workers.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Request latencies: from a fast read (~5 ms) to a long-poll or a slow apply.
SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Waits for a turn and sweeper passes: most are zero or milliseconds; the goal is under 1 s.
WAIT_SECONDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

HTTP_REQUESTS = Counter(
    "shipdeck_http_requests",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "shipdeck_http_request_duration_seconds",
    "Time from a request's arrival to its last response byte, by method and route template.",
    ["method", "route"],
    buckets=SECONDS,
)
HTTP_IN_FLIGHT = Gauge(
    "shipdeck_http_requests_in_flight",
    "HTTP requests being served now.",
    multiprocess_mode="livesum",
)
HUB_EVENT_SECONDS = Histogram(
    "shipdeck_hub_event_seconds",
    "From a release's change to the end of this server's pass over it (its chat cards "
    "written, the sessions connected here told): the commit, the notification between "
    "replicas, the hub's queue and its pass. Timed from the change's own timestamp, so the "
    "replicas' clocks must agree.",
    buckets=SECONDS,
)
CHAT_SOCKETS = Gauge(
    "shipdeck_chat_sockets",
    "Chat sockets open now (authenticated).",
    multiprocess_mode="livesum",
)
TOOL_CALLS = Counter(
    "shipdeck_tool_calls",
    "Tool calls through every door (REST, chat, MCP, Slack, Feishu, the command line), by "
    "tool, channel and outcome: ok, or the error code it was refused with.",
    ["tool", "channel", "outcome"],
)
TOOL_SECONDS = Histogram(
    "shipdeck_tool_call_duration_seconds",
    "How long a tool call ran, by tool: its waits for a runtime included, its wait for a turn "
    "not (that is shipdeck_turn_wait_seconds).",
    ["tool"],
    buckets=SECONDS,
)
TURN_WAIT_SECONDS = Histogram(
    "shipdeck_turn_wait_seconds",
    "PostgreSQL: how long database work waited for one of its process's turns "
    "(SHIPDECK_DB_CALL_THREADS): queueing inside the server.",
    buckets=WAIT_SECONDS,
)
SQLITE_WRITE_WAIT_SECONDS = Histogram(
    "shipdeck_sqlite_write_wait_seconds",
    "SQLite: how long a write waited for its process's turn at the database's write lock "
    "(the queue SQLite's writers take instead of turns).",
    buckets=WAIT_SECONDS,
)
TURNS_WAITING = Gauge(
    "shipdeck_turns_waiting",
    "Threads waiting for a turn now.",
    multiprocess_mode="livesum",
)
DB_RETRIES = Counter(
    "shipdeck_db_retries",
    "Transactions run again after the database rolled them back whole, by SQLSTATE "
    "(40P01 deadlock victim, 40001 serialization failure).",
    ["sqlstate"],
)
SWEEP_SECONDS = Histogram(
    "shipdeck_sweeper_pass_seconds",
    "How long one sweeper pass took (expiries, orphaned applies, apply queues).",
    buckets=WAIT_SECONDS,
)
SWEEP_FAILURES = Counter(
    "shipdeck_sweeper_failures",
    "Sweeper passes, or their expiry step, that ended in an error (logged; the next pass "
    "tries again).",
)
