"""Alembic environment: run against the connection handed over by core.migrate."""

from __future__ import annotations

from alembic import context

import core.models  # noqa: F401  (registers every core table)
from core.db import Base
from runtimes.sandbox import SandboxBase

# The sandbox runtime keeps its simulated state in the same database.
target_metadata = [Base.metadata, SandboxBase.metadata]

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=target_metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
