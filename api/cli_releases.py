"""`shipdeck releases ...`: operator commands that end or bring in releases on the server."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from api.cli_common import _fail, _operator, _services
from core.errors import ShipdeckError

releases = typer.Typer(help="Operator commands on releases (on the server).", no_args_is_help=True)


@releases.command("abandon")
def releases_abandon(
    release: Annotated[str, typer.Argument(help="the applying release, e.g. R-12")],
    reason: Annotated[str, typer.Option("--reason", help="why it is abandoned (audited)")],
) -> None:
    """End an `applying` release whose apply is dead: failed, target unlocked, audited."""
    from core.flows.apply import abandon_release

    services = _services()
    try:
        with services.sessions() as session:
            ended = abandon_release(session, actor=_operator(), release=release, reason=reason)
    except ShipdeckError as exc:
        raise _fail(exc) from None
    finally:
        services.close()
    typer.echo(json.dumps({"release": ended.id, "lifecycle_state": ended.lifecycle_state}))
