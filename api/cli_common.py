"""What every CLI command shares: the operator's identity, wired services, error output."""

from __future__ import annotations

import getpass
from typing import TYPE_CHECKING

import typer

from core.config import Settings, get_settings
from core.errors import ShipdeckError
from core.permissions import Actor, Channel, Role

if TYPE_CHECKING:  # the terminal client's commands never need the server's wiring
    from api.wiring import Services


def _operator() -> Actor:
    """Whoever runs the CLI on the server holds the database: an admin, audited by login."""
    return Actor(None, f"cli:{getpass.getuser()}", {None: Role.admin}, Channel.cli)


def _services(settings: Settings | None = None) -> Services:
    from api.wiring import Services

    services = Services.build(settings or get_settings(), inline_apply=True)
    services.migrate()
    return services


def _fail(exc: ShipdeckError) -> typer.Exit:
    typer.secho(f"error: {exc.message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)
