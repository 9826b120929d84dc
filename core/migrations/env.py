"""Alembic environment: run against the connection handed over by core.migrate."""

from __future__ import annotations

from alembic import context

import agent.models  # noqa: F401  (the chat bridge's tables live in the same database)
import core.models  # noqa: F401  (registers every core table)
from core.db import Base
from runtimes.sandbox import SandboxBase

# One database, one migration history: core's tables, the chat bridge's (on core's Base)
# and the sandbox runtime's simulated state. Only this file knows about all three.
target_metadata = [Base.metadata, SandboxBase.metadata]

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=target_metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
