"""The composition root: settings -> engine, sessions, event bus, runtimes, apply runner."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from anyio import CapacityLimiter
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from agent.factory import make_planner
from agent.hub import Hub
from agent.session import ChatDeps
from api.identity_watch import IdentityWatch
from api.oidc import OidcProvider
from core.audit.access import AccessLog, access_log
from core.audit.chain import ensure_started, install_keyring
from core.audit.keys import load_keyring
from core.config import Settings
from core.db import make_engine, make_read_sessionmaker, read_engine
from core.events import EventBus
from core.flows.runner import ApplyRunner
from core.live import PostgresListener, make_sessionmaker
from core.migrate import upgrade
from core.permissions import Actor
from core.turns import Turns
from core.zones import server_zone
from runtimes.compose import ComposeAdapter
from runtimes.kubernetes import KubernetesAdapter
from runtimes.registry import RuntimeRegistry
from runtimes.sandbox import SandboxAdapter
from tools.base import ToolContext

T = TypeVar("T")


def default_runtimes(engine: Engine) -> RuntimeRegistry:
    """The runtime adapters this build ships."""
    return RuntimeRegistry(
        {
            "sandbox": SandboxAdapter(engine, reads=read_engine(engine)),
            "compose": ComposeAdapter(),
            "kubernetes": KubernetesAdapter(),
        }
    )


@dataclass
class Services:
    """Everything a door (REST, chat, CLI) needs to call the core."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    bus: EventBus
    runtimes: RuntimeRegistry
    runner: ApplyRunner
    _hub: Hub | None = None
    _chat: ChatDeps | None = None
    _listener: PostgresListener | None = None
    _reads: sessionmaker[Session] | None = None
    _watch: IdentityWatch | None = None
    _oidc: OidcProvider | None = None
    _read_limiter: CapacityLimiter | None = None
    _turns: Turns | None = None

    @property
    def oidc(self) -> OidcProvider | None:
        """The OpenID Connect provider, when one is configured."""
        if self._oidc is None and self.settings.oidc_issuer and self.settings.oidc_client_id:
            self._oidc = OidcProvider(self.settings)
        return self._oidc

    @property
    def watch(self) -> IdentityWatch:
        """Re-checks the credentials of open chat sockets (started on first use)."""
        if self._watch is None:
            self._watch = IdentityWatch(self.reads, self.settings.identity_recheck_seconds)
        return self._watch

    @property
    def reads(self) -> sessionmaker[Session]:
        """Sessions for work that only reads: on SQLite they never wait for the write lock."""
        if self._reads is None:
            self._reads = make_read_sessionmaker(self.engine)
        return self._reads

    @property
    def turns(self) -> Turns | None:
        """On PostgreSQL, the turns every door's database work takes in its worker thread (REST
        tool calls, chat frames, MCP calls; `db_call_threads`, in arrival order; core/turns.py);
        None on SQLite, whose writers already queue for the write lock in order
        (core/sqlite_gate.py)."""
        if self._turns is None and self.engine.dialect.name != "sqlite":
            self._turns = Turns(self.settings.db_call_threads)
        return self._turns

    def in_turn(self, work: Callable[..., T], *args: Any) -> Callable[[], T]:
        """`work(*args)`, to run in a worker thread in one of `turns` (as it is on SQLite)."""
        call = partial(work, *args)
        turns = self.turns
        return call if turns is None else partial(turns.run, call)

    @property
    def read_limiter(self) -> CapacityLimiter | None:
        """On SQLite, the turns REST reads take to run in a worker thread (None: no limit).

        CPython's sqlite3 lets go of the GIL around every row and every column it fetches,
        and takes it back after: with dozens of threads fetching at once, each one waits for
        the GIL again at every column behind threads running Python (a convoy), and at 50
        clients the reads served fell to half. A few turns keep the fetching threads few.
        """
        if self._read_limiter is None and self.engine.dialect.name == "sqlite":
            self._read_limiter = CapacityLimiter(self.settings.sqlite_read_threads)
        return self._read_limiter

    def read_connection(self) -> Connection:
        """One pooled connection for work that only reads (sessions may be bound to it)."""
        engine = self.reads.kw["bind"]
        assert isinstance(engine, Engine)
        return engine.connect()

    def identity_changed(self) -> None:
        """A token or a role changed here: open sockets re-check now, not at the next tick."""
        if self._watch is not None:
            self._watch.poke()

    @property
    def hub(self) -> Hub:
        """The chat hub (started on first use: only servers need it).

        On PostgreSQL live events arrive through LISTEN/NOTIFY, so every replica's hub sees
        the events of all replicas.
        """
        if self._hub is None:
            self._hub = Hub(self.sessions, self.bus, self.reads)
            if self.engine.dialect.name == "postgresql":
                url = self.engine.url.set(drivername="postgresql")
                self._listener = PostgresListener(
                    url.render_as_string(hide_password=False), self.bus
                )
                self._listener.start()
        return self._hub

    @property
    def chat(self) -> ChatDeps:
        """What chat sessions need, with the configured planner."""
        if self._chat is None:
            self._chat = ChatDeps(
                self.sessions,
                self.context,
                make_planner(self.settings),
                max_cards=self.settings.chat_max_cards_per_turn,
                timezone=server_zone(self.settings.timezone),
                reads=self.reads,
            )
        return self._chat

    @classmethod
    def build(cls, settings: Settings, *, inline_apply: bool = False) -> Services:
        """Wire the core for `settings`; nothing starts until asked."""
        engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
        bus = EventBus()
        sessions = make_sessionmaker(engine, bus)
        install_keyring(sessions, load_keyring(settings, settings.database_url))
        runtimes = default_runtimes(engine)
        runner = ApplyRunner(
            sessions, runtimes, lease_seconds=settings.apply_lease_seconds, inline=inline_apply
        )
        return cls(settings, engine, sessions, bus, runtimes, runner)

    def migrate(self) -> None:
        """Bring the schema to the newest migration; begin the audit stream if it is new."""
        upgrade(self.engine)
        with self.sessions() as session:
            ensure_started(session)

    @property
    def access(self) -> AccessLog:
        """The batched access-log writer of this database (reads are queued, not committed)."""
        return access_log(self.engine)

    def context(self, actor: Actor) -> ToolContext:
        """The tool context for one caller: read tools run in `reads` and queue their record."""
        return ToolContext(
            self.sessions, self.runtimes, self.runner, actor, self.reads, self.access
        )

    def close(self) -> None:
        """Stop background work and release connections."""
        if self._listener is not None:
            self._listener.stop()
        if self._hub is not None:
            self._hub.close()
        if self._watch is not None:
            self._watch.close()
        self.runner.shutdown()
        self.access.close()  # queued reads are written before the connections go
        self.engine.dispose()
