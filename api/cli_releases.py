"""`shipdeck releases ...`: operator commands that end or bring in releases on the server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from api.cli_common import _fail, _operator, _services
from core.errors import ShipdeckError

releases = typer.Typer(
    help="Releases: list, show, diff, apply, rollback (over the API); abandon (on the server).",
    no_args_is_help=True,
)


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


imports = typer.Typer(help="Bring in records of older tools.", no_args_is_help=True)


@imports.command("legacy")
def import_legacy_releases(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSONL release rows")],
    check: Annotated[bool, typer.Option("--check", help="report only, write nothing")] = False,
    skip_ambiguous: Annotated[
        bool, typer.Option("--skip-ambiguous", help="import the rest when some rows are ambiguous")
    ] = False,
) -> None:
    """Import old release rows with their states mapped; each row gets an audit event."""
    from core.flows.legacy import import_legacy

    services = _services()
    try:
        with services.sessions() as session:
            report = import_legacy(
                session,
                actor=_operator(),
                lines=file.read_text(encoding="utf-8").splitlines(),
                write=not check,
                skip_ambiguous=skip_ambiguous,
            )
    finally:
        services.close()
    typer.echo(report.model_dump_json(indent=2))
    if report.invalid or (report.ambiguous and not skip_ambiguous):
        typer.secho(
            f"{len(report.invalid)} invalid and {len(report.ambiguous)} ambiguous rows: "
            "nothing imported",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(code=1)


def _remote() -> None:
    # The remote subcommands (list, show, diff, apply, rollback) talk to a server over HTTP.
    from api.remote.commands import register_release_commands

    register_release_commands(releases)


_remote()
