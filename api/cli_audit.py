"""`shipdeck audit access`: the access log's retention (admins on the server)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated

import typer

from api.cli_common import _fail, _operator, _services
from core.errors import InvalidInput, ShipdeckError

access = typer.Typer(help="The access log (reads: who looked at what).", no_args_is_help=True)
AGE = re.compile(r"^(\d{1,5})([dh])$")


def cutoff(before: str | None, older_than: str | None, now: datetime) -> datetime:
    """The prune cut from `--before DATE` or `--older-than 90d|12h` (exactly one)."""
    from core.audit.export import parse_when

    if (before is None) == (older_than is None):
        raise InvalidInput("give exactly one of --before DATE or --older-than AGE (90d, 12h)")
    if before is not None:
        return parse_when(before)
    match = AGE.match(older_than or "")
    if match is None:
        raise InvalidInput(f"{older_than!r} is not an age: use days or hours (90d, 12h)")
    count, unit = int(match.group(1)), match.group(2)
    return now - (timedelta(days=count) if unit == "d" else timedelta(hours=count))


@access.command("prune")
def access_prune(
    before: Annotated[
        str | None, typer.Option(help="Delete records before this ISO date (UTC).")
    ] = None,
    older_than: Annotated[
        str | None, typer.Option(help="Delete records older than this age: 90d, 12h.")
    ] = None,
) -> None:
    """Delete old access-log records in short batches; the prune is itself an audit event."""
    from core.audit.access_reads import prune_access
    from core.db import utcnow

    try:
        cut = cutoff(before, older_than, utcnow())
    except ShipdeckError as exc:
        raise _fail(exc) from None
    services = _services()
    try:
        with services.sessions() as session:
            result = prune_access(session, actor=_operator(), before=cut)
    except ShipdeckError as exc:
        raise _fail(exc) from None
    finally:
        services.close()
    typer.echo(f"{result.deleted} access records before {result.before.isoformat()} deleted")
