"""Remote subcommands: releases list|show|diff|apply|rollback, approvals ..., targets status."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from api.remote.client import Client, RemoteError
from api.remote.config import ConfigError, load_remote
from api.remote.output import Output, changes_text, emit_json, emit_table

OutputOpt = Annotated[
    Output, typer.Option("--output", "-o", help="json for scripts, table for people.")
]
LONG_POLL_SECONDS = 25.0
TERMINAL = {"applied", "failed", "rolled_back", "rollback_failed", "rejected", "cancelled"}

approvals = typer.Typer(help="The approval inbox, from the terminal.", no_args_is_help=True)
targets = typer.Typer(
    help="Targets and what runs on them, from the terminal.", no_args_is_help=True
)


def _client() -> Client:
    try:
        return Client(load_remote())
    except ConfigError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from None


def _call(fn: Any) -> Any:
    client = _client()
    try:
        return fn(client)
    except RemoteError as exc:
        typer.secho(f"error: {exc.message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from None
    finally:
        client.close()


def _release_rows(items: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            r["id"],
            f"{r['project']}/{r['environment']}",
            r["lifecycle_state"],
            changes_text(r.get("changes") or {}),
            r["requested_by"],
            str(r["created_at"])[:16].replace("T", " "),
        ]
        for r in items
    ]


RELEASE_HEADERS = ("id", "target", "state", "changes", "by", "created")


def _show_release(release: dict[str, Any], output: Output) -> None:
    if output == Output.json:
        emit_json(release)
        return
    emit_table(RELEASE_HEADERS, _release_rows([release]))
    approval = release.get("approval")
    if approval:
        steps = ", ".join(
            f"{s['group']} {len(s['approved_by'])}/{s['count']}" for s in approval["steps"]
        )
        typer.echo(f"approval: {approval['state']} ({steps}); {approval['policy_reason']}")
    if release.get("reason"):
        typer.echo(f"reason: {release['reason']}")


def register_release_commands(releases: typer.Typer) -> None:
    """Add the remote subcommands to the `shipdeck releases` group."""

    @releases.command("list")
    def releases_list(
        project: Annotated[str | None, typer.Option(help="only this project")] = None,
        environment: Annotated[str | None, typer.Option("--env", help="only this env")] = None,
        state: Annotated[str | None, typer.Option(help="only this lifecycle state")] = None,
        limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
        output: OutputOpt = Output.table,
    ) -> None:
        """Releases on the server, newest first."""
        page = _call(
            lambda c: c.get(
                "/api/v1/releases",
                project=project,
                environment=environment,
                state=state,
                limit=limit,
            )
        )
        if output == Output.json:
            emit_json(page)
        else:
            emit_table(RELEASE_HEADERS, _release_rows(page["items"]))

    @releases.command("show")
    def releases_show(
        release: Annotated[str, typer.Argument(help="e.g. R-12")],
        output: OutputOpt = Output.table,
    ) -> None:
        """One release: state, changes, approval."""
        _show_release(_call(lambda c: c.get(f"/api/v1/releases/{release}")), output)

    @releases.command("diff")
    def releases_diff(
        release: Annotated[str, typer.Argument(help="e.g. R-12")],
        output: OutputOpt = Output.table,
    ) -> None:
        """The release's previewed diff: live value -> desired value, per service and field."""
        found = _call(lambda c: c.get(f"/api/v1/releases/{release}"))
        preview = found.get("preview") or {}
        if output == Output.json:
            emit_json({"release": found["id"], **preview})
            return
        rows = [
            [service, field, change.get("before"), change.get("after")]
            for service, fields in sorted((preview.get("diff") or {}).items())
            for field, change in sorted(fields.items())
        ]
        emit_table(("service", "field", "live", "desired"), rows)
        if preview:
            risk = preview.get("risk") or {}
            stale = " (expired: apply re-previews)" if preview.get("expired") else ""
            typer.echo(f"risk: {risk.get('level', '-')}; expires {preview['expires_at']}{stale}")

    @releases.command("apply")
    def releases_apply(
        release: Annotated[str, typer.Argument(help="the approved release, e.g. R-12")],
        wait: Annotated[bool, typer.Option(help="wait for applied/failed")] = True,
        timeout: Annotated[float, typer.Option(help="seconds to wait")] = 600,
        output: OutputOpt = Output.table,
    ) -> None:
        """Apply an approved release; waits for the outcome unless --no-wait."""

        def run(client: Client) -> Any:
            started = client.post(f"/api/v1/releases/{release}/apply")
            deadline = time.monotonic() + timeout
            current = started
            while wait and current["lifecycle_state"] not in TERMINAL:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RemoteError(f"{release} still {current['lifecycle_state']} after wait")
                # A long-poll: the server answers when the release leaves its current state.
                asked = time.monotonic()
                state = current["lifecycle_state"]
                current = client.get(
                    f"/api/v1/releases/{release}",
                    wait=round(min(left, LONG_POLL_SECONDS), 3),
                    while_state=state,
                )
                if current["lifecycle_state"] == state and time.monotonic() - asked < 0.25:
                    time.sleep(0.5)  # a server without long-polls answered at once: poll
            return current

        result = _call(run)
        _show_release(result, output)
        if result["lifecycle_state"] == "failed":
            raise typer.Exit(code=1)

    @releases.command("rollback")
    def releases_rollback(
        project: Annotated[str, typer.Argument()],
        environment: Annotated[str, typer.Argument()],
        service: Annotated[
            list[str] | None, typer.Option("--service", help="only these services")
        ] = None,
        to: Annotated[str | None, typer.Option("--to", help="the state as of release R-n")] = None,
        emergency: Annotated[bool, typer.Option(help="declare an emergency rollback")] = False,
        submit: Annotated[bool, typer.Option(help="submit the previewed rollback")] = True,
        output: OutputOpt = Output.table,
    ) -> None:
        """Preview a rollback and submit it (it then waits for approval or applies like any)."""

        def run(client: Client) -> Any:
            body = {
                "project": project,
                "environment": environment,
                "services": service or None,
                "to_release_id": to,
                "emergency": emergency,
            }
            previewed = client.post("/api/v1/rollbacks", body)
            if not submit:
                return previewed
            return client.post(f"/api/v1/releases/{previewed['id']}/submit")

        _show_release(_call(run), output)


@approvals.command("list")
def approvals_list(
    mine: Annotated[bool, typer.Option(help="only what I can decide or asked for")] = False,
    state: Annotated[str | None, typer.Option(help="pending, approved, rejected ...")] = "pending",
    project: Annotated[str | None, typer.Option()] = None,
    environment: Annotated[str | None, typer.Option("--env")] = None,
    output: OutputOpt = Output.table,
) -> None:
    """The approval inbox (pending by default; --state '' for all)."""
    page = _call(
        lambda c: c.get(
            "/api/v1/approvals",
            mine=str(mine).lower() if mine else None,
            state=state or None,
            project=project,
            environment=environment,
        )
    )
    if output == Output.json:
        emit_json(page)
        return
    rows = [
        [
            a["release_id"],
            f"{a['project']}/{a['environment']}",
            a["risk"],
            a["state"],
            changes_text(a.get("changes") or {}),
            a["requested_by"],
            "yes" if a["can_decide"] else "no",
        ]
        for a in page["items"]
    ]
    emit_table(("release", "target", "risk", "state", "changes", "by", "you decide"), rows)


def _decide(action: str, release: str, comment: str | None, output: Output) -> None:
    body = {"comment": comment} if comment else {}
    result = _call(lambda c: c.post(f"/api/v1/approvals/{release}/{action}", body))
    _show_release(result, output)


@approvals.command("approve")
def approvals_approve(
    release: Annotated[str, typer.Argument(help="e.g. R-12")],
    comment: Annotated[str | None, typer.Option("--comment", "-m")] = None,
    output: OutputOpt = Output.table,
) -> None:
    """Approve the current step of a release."""
    _decide("approve", release, comment, output)


@approvals.command("reject")
def approvals_reject(
    release: Annotated[str, typer.Argument(help="e.g. R-12")],
    reason: Annotated[str | None, typer.Option("--reason", "-m")] = None,
    output: OutputOpt = Output.table,
) -> None:
    """Reject a release waiting for approval."""
    _decide("reject", release, reason, output)


@targets.command("status")
def targets_status(
    project: Annotated[str | None, typer.Argument(help="one project (default: all)")] = None,
    environment: Annotated[str | None, typer.Argument(help="one environment")] = None,
    output: OutputOpt = Output.table,
) -> None:
    """What runs where: image, replicas and health per service of each target."""

    def run(client: Client) -> list[dict[str, Any]]:
        listed = client.get("/api/v1/targets", project=project)["items"]
        chosen = [t for t in listed if environment is None or t["environment"] == environment]
        if environment is not None and not chosen:
            raise RemoteError(f"no target {project}/{environment}")
        return [client.get(f"/api/v1/targets/{t['project']}/{t['environment']}") for t in chosen]

    statuses = _call(run)
    if output == Output.json:
        emit_json(statuses)
        return
    rows = [
        [
            f"{s['project']}/{s['environment']}",
            name,
            svc.get("image"),
            svc.get("replicas"),
            svc.get("health"),
            s.get("active_release"),
        ]
        for s in statuses
        for name, svc in sorted((s.get("services") or {}).items())
    ]
    emit_table(("target", "service", "image", "replicas", "health", "applying"), rows)
