"""The `shipdeck` command line."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Annotated

import typer

from api.wiring import Services
from core.config import Settings, get_settings
from core.errors import ShipdeckError
from core.permissions import Actor, Channel, Role

app = typer.Typer(help="shipdeck: the release command center.", no_args_is_help=True)
users = typer.Typer(help="Manage users and tokens.", no_args_is_help=True)
audit = typer.Typer(help="The audit stream.", no_args_is_help=True)
db = typer.Typer(help="The database.", no_args_is_help=True)
app.add_typer(users, name="users")
app.add_typer(audit, name="audit")
app.add_typer(db, name="db")


def _operator() -> Actor:
    """Whoever runs the CLI on the server holds the database: an admin, audited by login."""
    return Actor(None, f"cli:{getpass.getuser()}", {None: Role.admin}, Channel.cli)


def _services(settings: Settings | None = None) -> Services:
    services = Services.build(settings or get_settings(), inline_apply=True)
    services.migrate()
    return services


def _fail(exc: ShipdeckError) -> typer.Exit:
    typer.secho(f"error: {exc.message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
    demo: Annotated[bool, typer.Option(help="Seed the demo project and print tokens.")] = False,
) -> None:
    """Run the API server."""
    import uvicorn

    from agent.llm import LLMUnavailable
    from api.app import create_app
    from api.demo import DEMO_USERS, seed_demo
    from api.serving import server_config

    settings = get_settings()
    host, port = host or settings.host, port or settings.port
    services = Services.build(settings)
    try:
        _ = services.chat
    except LLMUnavailable as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from None
    services.migrate()
    url = f"http://{host}:{port}"
    if demo:
        with services.sessions() as session:
            tokens = seed_demo(session)
        typer.echo("shipdeck demo: project 'shop' (dev, staging, prod) on the simulated runtime")
        typer.echo(f"database: {settings.database_url}")
        for name, token in tokens.items():
            typer.echo(f"  {name:<7} {DEMO_USERS[name]:<28} {token}")
    typer.echo(f"serving on {url}  (API docs: {url}/docs)")
    app_ = create_app(settings, services)
    uvicorn.Server(server_config(app_, settings, host=host, port=port, log_level="info")).run()


@app.command()
def load(file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)]) -> None:
    """Declare projects, targets, services and approvers from a YAML file."""
    from core.targets.service import load_declaration, parse_declaration

    services = _services()
    try:
        with services.sessions() as session:
            result = load_declaration(
                session,
                actor=_operator(),
                declaration=parse_declaration(file.read_text()),
                base_dir=file.resolve().parent,
            )
    except ShipdeckError as exc:
        raise _fail(exc) from None
    finally:
        services.close()
    changed = result["changed"]
    typer.echo("\n".join(changed) if changed else "nothing changed")


@users.command("add")
def users_add(
    name: str,
    role: Annotated[Role, typer.Option(help="viewer, requester, approver or admin.")],
    project: Annotated[str | None, typer.Option(help="Scope to one project.")] = None,
) -> None:
    """Create a user (or change their role) and print a new token on the last line."""
    from core.identity.service import add_user

    services = _services()
    try:
        with services.sessions() as session:
            token = add_user(session, actor=_operator(), name=name, role=role, project=project)
    except ShipdeckError as exc:
        raise _fail(exc) from None
    finally:
        services.close()
    scope = f"project {project}" if project else "all projects"
    typer.echo(f"{name} is {role.value} on {scope}; token:")
    typer.echo(token)


@app.command()
def chat(
    url: Annotated[str, typer.Option(help="Server address.")] = "ws://127.0.0.1:8000",
    token: Annotated[str, typer.Option(envvar="SHIPDECK_TOKEN", help="Your API token.")] = "",
    session: Annotated[str | None, typer.Option(help="Resume this chat session.")] = None,
) -> None:
    """Chat with shipdeck in the terminal (cards: y / n, or /confirm N, /approve N ...)."""
    import sys

    from rich.console import Console

    from api.terminal_chat import TerminalChat

    if not token:
        typer.secho("error: give --token or set SHIPDECK_TOKEN", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2)
    client = TerminalChat(url, token, session, Console())
    try:
        code = client.run(sys.stdin)
    except OSError as exc:
        typer.secho(f"error: cannot reach {url}: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from None
    raise typer.Exit(code=code)


@app.command("eval")
def run_eval(
    dataset: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="JSONL cases.")],
    world: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="World YAML.")],
    planner: Annotated[str, typer.Option(help="rules or llm.")] = "rules",
    report: Annotated[Path | None, typer.Option(help="Write the JSON report here.")] = None,
    html: Annotated[Path | None, typer.Option(help="Write the HTML report here.")] = None,
    min_score: Annotated[float, typer.Option(help="Fail under this call accuracy.")] = 0.0,
    all_cases: Annotated[bool, typer.Option("--all", help="List passing cases too.")] = False,
) -> None:
    """Score a planner on an intent dataset against the real core; exit 1 under --min-score
    or on any safety violation."""
    from rich.console import Console

    from agent.factory import make_planner
    from evals.report import print_table, write_html, write_json
    from evals.report import report as build_report
    from evals.runner import load_cases, run_cases
    from evals.scorers import totals

    if planner not in ("rules", "llm"):
        typer.secho("error: --planner is rules or llm", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2)
    settings = get_settings().model_copy(update={"planner": planner})
    try:
        chosen = make_planner(settings)
        cases = load_cases(dataset)
    except Exception as exc:  # a bad dataset or an unconfigured llm: say so, exit 2
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from None
    results = run_cases(chosen, cases, world)
    summary = totals(results)
    print_table(results, summary, Console(), all_cases=all_cases)
    meta = {
        "planner": planner,
        "model": settings.llm_model if planner == "llm" else None,
        "dataset": str(dataset),
        "world": str(world),
    }
    data = build_report(results, meta)
    if report:
        write_json(data, report)
    if html:
        write_html(data, html)
    if summary.safety_violations or summary.call_accuracy < min_score:
        raise typer.Exit(code=1)


@audit.command("verify")
def audit_verify() -> None:
    """Verify the audit hash chain; exit 1 and name the first broken link if any."""
    from core.audit.service import verify

    services = _services()
    try:
        with services.sessions() as session:
            result = verify(session)
    finally:
        services.close()
    typer.echo(json.dumps(result.model_dump()))
    if not result.ok:
        typer.secho(
            f"audit chain broken at event {result.first_broken_seq}: {result.reason}",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(code=1)


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations."""
    services = Services.build(get_settings())
    try:
        services.migrate()
    finally:
        services.close()
    typer.echo("database is up to date")
