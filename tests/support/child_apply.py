"""A replica in a process of its own that applies one release through the tools.

Tests start it, hold it at a point of its transaction from the database's side, and kill it
there (`python -m tests.support.child_apply URL USER RELEASE_ID`). Everything it does goes
through the product's own wiring, as `shipdeck serve` would; PGAPPNAME and PGOPTIONS from
its environment reach its PostgreSQL sessions through libpq.
"""

from __future__ import annotations

import sys

from sqlalchemy import select

from api.wiring import Services
from core.config import Settings
from core.identity.models import User
from core.identity.service import actor_for
from tools.registry import get_tool


def main(url: str, user: str, release: str) -> None:
    """Apply `release` as `user`; the parent kills this process before it returns."""
    services = Services.build(Settings(database_url=url))
    with services.sessions() as session:
        actor = actor_for(session.scalars(select(User).where(User.name == user)).one())
    result = get_tool("apply_release").run(services.context(actor), {"release_id": release})
    sys.stdout.write(f"{result.lifecycle_state}\n")


if __name__ == "__main__":
    main(*sys.argv[1:4])
