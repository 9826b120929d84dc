"""The `shipdeck` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.engine import make_url

from api.cli_audit import access
from api.cli_common import _fail, _operator, _services
from api.cli_releases import imports, releases
from api.remote.commands import approvals, targets
from core.audit.verify import AuditVerification
from core.config import BadSettings, get_settings
from core.errors import ShipdeckError
from core.permissions import Role

app = typer.Typer(help="shipdeck: the release command center.", no_args_is_help=True)
users = typer.Typer(help="Manage users and tokens.", no_args_is_help=True)
tokens = typer.Typer(help="List, issue and revoke API tokens.", no_args_is_help=True)
audit = typer.Typer(help="The audit stream.", no_args_is_help=True)
db = typer.Typer(help="The database.", no_args_is_help=True)
app.add_typer(users, name="users")
app.add_typer(tokens, name="tokens")
app.add_typer(audit, name="audit")
audit.add_typer(access, name="access")
app.add_typer(db, name="db")
app.add_typer(releases, name="releases")
app.add_typer(imports, name="import")
app.add_typer(approvals, name="approvals")
app.add_typer(targets, name="targets")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
    demo: Annotated[bool, typer.Option(help="Seed the demo project and print tokens.")] = False,
    workers: Annotated[
        int,
        typer.Option(min=1, max=64, help="Worker processes (PostgreSQL only; about one per core)."),
    ] = 1,
) -> None:
    """Run the API server."""
    import uvicorn

    from agent.llm import LLMUnavailable
    from api.app import create_app
    from api.demo import DEMO_USERS, seed_demo
    from api.serving import server_config, settle_heap

    settings = get_settings()
    host, port = host or settings.host, port or settings.port
    if workers > 1 and make_url(settings.database_url).get_backend_name() != "postgresql":
        typer.secho(
            "error: --workers needs PostgreSQL (SHIPDECK_DATABASE_URL=postgresql+psycopg://...): "
            "SQLite lets one process write at a time and live events reach other processes "
            "only through PostgreSQL LISTEN/NOTIFY; run one process on SQLite",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(code=2)
    from api.wiring import Services

    services = Services.build(settings)
    try:
        _ = services.chat
    except LLMUnavailable as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from None
    services.migrate()
    url = f"http://{host}:{port}"
    if demo:
        from api.demo import load_kept_tokens, save_kept_tokens

        kept_file = load_kept_tokens(settings)
        with services.sessions() as session:
            tokens = seed_demo(session, kept_file[1])
        save_kept_tokens(kept_file[0], tokens)
        typer.echo("shipdeck demo: project 'shop' (dev, staging, prod) on the simulated runtime")
        typer.echo(f"database: {settings.database_url}")
        for name, token in tokens.items():
            typer.echo(f"  {name:<7} {DEMO_USERS[name]:<28} {token}")
        typer.echo(f"tokens are kept across restarts in {kept_file[0]} (delete it for new ones)")
        typer.echo(f"terminal: export SHIPDECK_URL={url} SHIPDECK_TOKEN=<a token above>")
    typer.echo(f"serving on {url}  (API docs: {url}/docs)")
    if workers > 1:
        from api.serving import serve_workers

        services.close()  # migrated once here; each worker wires its own
        serve_workers(settings, host=host, port=port, workers=workers)
        return
    app_ = create_app(settings, services)
    settle_heap()
    uvicorn.Server(server_config(app_, settings, host=host, port=port, log_level="info")).run()


@app.command()
def load(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    prune: Annotated[
        bool, typer.Option(help="Remove group members and policies the file does not list.")
    ] = False,
) -> None:
    """Declare projects, targets, services and approvers from a YAML file.

    Prints every change (roles, groups and policies with before -> after); each is audited.
    Each project is its own transaction, printed once committed: if the load stops, what it
    printed is loaded and audited, and running it again finishes the job.
    """
    from sqlalchemy.exc import DBAPIError

    from core.notify.declaration import load_notifications, split_declaration
    from core.targets.service import load_declaration, parse_declaration

    printed: list[str] = []

    def show(lines: list[str]) -> None:
        printed.extend(lines)
        typer.echo("\n".join(lines))

    services = _services()
    try:
        rest, notify = split_declaration(file.read_text())
        with services.sessions() as session:
            load_declaration(
                session,
                actor=_operator(),
                declaration=parse_declaration(rest),
                base_dir=file.resolve().parent,
                prune=prune,
                on_part=show,
            )
            if notify is not None:
                notified = load_notifications(session, actor=_operator(), declaration=notify)
                if notified:
                    show(notified)
    except (ShipdeckError, DBAPIError) as exc:
        if printed:
            typer.echo("stopped: the changes above are loaded and audited; load again to finish")
        if isinstance(exc, ShipdeckError):
            raise _fail(exc) from None
        typer.secho(f"error: the database refused the load: {exc.orig}", fg="red", err=True)
        raise typer.Exit(code=1) from None
    finally:
        services.close()
    if not printed:
        typer.echo("nothing changed")


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


@tokens.command("list")
def tokens_list(
    user: Annotated[str | None, typer.Option(help="Only this user's tokens.")] = None,
    all_tokens: Annotated[
        bool, typer.Option("--all", help="Include revoked and expired tokens.")
    ] = False,
) -> None:
    """List tokens (id, user, label, hint, expiry, state); secrets are never shown."""
    from rich.console import Console
    from rich.table import Table

    from core.identity.tokens import list_tokens

    services = _services()
    try:
        with services.reads() as session:
            items = list_tokens(session, actor=_operator(), user=user, include_inactive=all_tokens)
    finally:
        services.close()
    table = Table("id", "user", "label", "hint", "created", "expires", "state")
    for item in items:
        state = "revoked" if item.revoked_at else ("active" if item.active else "expired")
        table.add_row(
            str(item.id),
            item.user,
            item.label,
            item.hint + "…",
            item.created_at.strftime("%Y-%m-%d %H:%M"),
            item.expires_at.strftime("%Y-%m-%d %H:%M") if item.expires_at else "never",
            state,
        )
    Console(width=120).print(table)


@tokens.command("create")
def tokens_create(
    user: str,
    label: Annotated[str, typer.Option(help="Free text to recognise the token by.")] = "cli",
    expires: Annotated[
        str | None, typer.Option(help="Lifetime (30d, 12h, 90m, 2w) or an ISO date.")
    ] = None,
) -> None:
    """Issue a token for an existing user; it is printed alone on the last line."""
    from core.identity.tokens import create_token, parse_expiry

    services = _services()
    try:
        expires_at = parse_expiry(expires) if expires else None
        with services.sessions() as session:
            token, view = create_token(
                session, actor=_operator(), user=user, label=label, expires_at=expires_at
            )
    except ShipdeckError as exc:
        raise _fail(exc) from None
    finally:
        services.close()
    until = view.expires_at.isoformat(timespec="seconds") if view.expires_at else "never"
    typer.echo(f"token {view.id} for {view.user} (expires: {until}):")
    typer.echo(token)


@tokens.command("revoke")
def tokens_revoke(token_id: int) -> None:
    """Revoke a token by id (see `shipdeck tokens list`); open chats using it close."""
    from core.identity.tokens import revoke_token

    services = _services()
    try:
        with services.sessions() as session:
            view = revoke_token(session, actor=_operator(), token_id=token_id)
    except ShipdeckError as exc:
        raise _fail(exc) from None
    finally:
        services.close()
    typer.echo(f"token {view.id} of {view.user} is revoked")


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
    except PermissionError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from None
    except OSError as exc:
        typer.secho(f"error: cannot reach {url}: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from None
    raise typer.Exit(code=code)


@app.command()
def mcp(
    token: Annotated[
        str, typer.Option(envvar="SHIPDECK_TOKEN", help="The API token the agent acts as.")
    ] = "",
    console_url: Annotated[
        str | None,
        typer.Option(envvar="SHIPDECK_PUBLIC_URL", help="Console address for confirmation links."),
    ] = None,
) -> None:
    """Serve the tools over MCP on stdio for a local agent (Claude Code, Cursor, ...).

    Mutating calls run only when the token's user confirms them in the client; the HTTP
    transport is served by `shipdeck serve` under /mcp.
    """
    from api.mcp.stdio import check_token, serve_stdio

    if not token:
        typer.secho("error: give --token or set SHIPDECK_TOKEN", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2)
    settings = get_settings()
    from api.wiring import Services

    services = Services.build(settings, inline_apply=True)
    try:
        if settings.migrate_on_start:
            services.migrate()
        try:
            check_token(services, token)
        except ShipdeckError as exc:
            raise _fail(exc) from None
        serve_stdio(services, token, console_url)
    finally:
        services.close()


@app.command("eval")
def run_eval(
    dataset: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="JSONL cases.")],
    world: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="World YAML.")],
    planner: Annotated[str, typer.Option(help="rules, llm or hybrid.")] = "rules",
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

    if planner not in ("rules", "llm", "hybrid"):
        typer.secho("error: --planner is rules, llm or hybrid", fg=typer.colors.RED, err=True)
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
        "model": settings.llm_model if planner != "rules" else None,
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


def _verdict(result: AuditVerification) -> None:
    typer.echo(result.model_dump_json())
    if not result.ok:
        what = (
            f"audit chain broken at event {result.first_broken_seq}"
            if result.first_broken_seq
            else "audit check failed"
        )
        typer.secho(f"{what}: {result.reason}", fg=typer.colors.RED, err=True)
        for item in result.unexplained[:20]:
            typer.secho(f"  {item.release_id} ({item.state}): {item.reason}", err=True)
        raise typer.Exit(code=1)


@audit.command("verify")
def audit_verify(
    checkpoint: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="A checkpoint kept elsewhere."),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="Verify this JSONL export instead."),
    ] = None,
) -> None:
    """Verify the audit chain (or an export file); exit 1 and say why if anything is off.

    Never creates a database or a key: a missing one is a failure.
    """
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from core.audit.export import read_lines
    from core.audit.keys import KeyUnavailable, load_keyring
    from core.audit.verify import read_checkpoint, verify, verify_lines

    settings = get_settings()
    try:
        cp = read_checkpoint(checkpoint) if checkpoint else None
        ring = load_keyring(settings, create=False)
    except ShipdeckError as exc:
        failed = AuditVerification(ok=False, checked=0, last_seq=0, reason=exc.message)
        if isinstance(exc, KeyUnavailable) and file is None:
            database = make_url(settings.database_url).database or ""
            if settings.database_url.startswith("sqlite") and not Path(database).exists():
                failed.reason = f"the database {database} does not exist"
        _verdict(failed)
        return
    if file is not None:
        _verdict(verify_lines(read_lines(file), ring, checkpoint=cp))
        return
    engine = create_engine(settings.database_url)  # plain: never creates a file or a folder
    try:
        with Session(engine) as session:
            result = verify(session, checkpoint=cp, keyring=ring)
    finally:
        engine.dispose()
    _verdict(result)


@audit.command("checkpoint")
def audit_checkpoint(
    out: Annotated[Path | None, typer.Option(help="Also write it to this file.")] = None,
) -> None:
    """Print a signed {seq, head_hash, at} of the chain's head, to keep somewhere else."""
    from core.audit.service import checkpoint

    services = _services()
    try:
        with services.sessions() as session:
            cp = checkpoint(session)
    finally:
        services.close()
    text = cp.model_dump_json()
    if out is not None:
        out.write_text(text + "\n")
    typer.echo(text)


@audit.command("rotate-key")
def audit_rotate_key() -> None:
    """Start signing with a new audit key; the rotation is itself an audit event."""
    from core.audit.service import rotate_key

    services = _services()
    try:
        with services.sessions() as session:
            new = rotate_key(session, actor=_operator())
    except ShipdeckError as exc:
        raise _fail(exc) from None
    finally:
        services.close()
    typer.echo(f"audit key rotated; now signing with key id {new}")


@audit.command("export")
def audit_export(
    since: Annotated[str | None, typer.Option(help="From this ISO date/time (UTC).")] = None,
    until: Annotated[str | None, typer.Option(help="Before this ISO date/time (UTC).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
    out: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
    access: Annotated[
        bool, typer.Option(help="Export the access log (reads) instead of the chain.")
    ] = False,
) -> None:
    """Export events with every chain field (a JSONL export verifies on its own)."""
    import sys

    from core.audit.export import export, export_access, parse_when

    write = export_access if access else export

    services = _services()
    try:
        start = parse_when(since) if since else None
        end = parse_when(until) if until else None
        with services.sessions() as session:
            if out is None:
                count = write(session, sys.stdout, since=start, until=end, fmt=fmt)
            else:
                with out.open("w", encoding="utf-8", newline="") as handle:
                    count = write(session, handle, since=start, until=end, fmt=fmt)
    except ShipdeckError as exc:
        raise _fail(exc) from None
    finally:
        services.close()
    typer.secho(f"{count} events exported", err=True)


@audit.command("archive")
def audit_archive(
    before: Annotated[str, typer.Option(help="Archive events older than this ISO date.")],
    directory: Annotated[Path, typer.Option("--dir", help="Folder for segment files.")],
) -> None:
    """Move old events to a segment file with its checkpoint, then delete them from the table."""
    from core.audit.export import archive, parse_when

    services = _services()
    try:
        with services.sessions() as session:
            result = archive(
                session, actor=_operator(), before=parse_when(before), directory=directory
            )
    except ShipdeckError as exc:
        raise _fail(exc) from None
    finally:
        services.close()
    if result is None:
        typer.echo("nothing to archive")
        return
    typer.echo(
        f"archived events {result.first_seq}..{result.last_seq} to {result.file} "
        f"(checkpoint {result.checkpoint_file})"
    )


@audit.command("stream")
def audit_stream(
    once: Annotated[bool, typer.Option(help="Deliver what is pending, then exit.")] = False,
) -> None:
    """Stream the chain to SHIPDECK_AUDIT_WEBHOOK_URL, signed with the webhook secret.

    Or let `shipdeck serve` do it (SHIPDECK_AUDIT_STREAM_IN_SERVE=true); either way, any number
    of streamers deliver each batch once.
    """
    import threading

    from core.audit.sink import stream

    settings = get_settings()
    if not settings.audit_webhook_url or settings.audit_webhook_secret is None:
        typer.secho(
            "error: set SHIPDECK_AUDIT_WEBHOOK_URL and SHIPDECK_AUDIT_WEBHOOK_SECRET",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(code=2)
    secret = settings.audit_webhook_secret.get_secret_value().encode()
    services = _services(settings)
    try:
        stream(
            sessions=services.sessions,
            url=settings.audit_webhook_url,
            secret=secret,
            stop=threading.Event(),  # runs until interrupted
            once=once,
            report=lambda result: typer.echo(result.model_dump_json()),
        )
    finally:
        services.close()


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations."""
    from api.wiring import Services

    services = Services.build(get_settings())
    try:
        services.migrate()
    finally:
        services.close()
    typer.echo("database is up to date")


def main() -> None:
    """The `shipdeck` command: settings that do not validate are one clear line, exit 2."""
    try:
        app()
    except BadSettings as exc:
        typer.echo(f"shipdeck: {exc}", err=True)
        raise SystemExit(2) from None
