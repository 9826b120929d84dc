"""What a tool is: input model, output model, one function and metadata."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, get_type_hints

from pydantic import BaseModel, ValidationError
from sqlalchemy import Select
from sqlalchemy.orm import Session, sessionmaker

from core.audit.access import AccessLog
from core.audit.service import canonical_json, record
from core.db import commits, retryable_failure, retrying, sqlstate
from core.errors import Interrupted, InvalidInput, ShipdeckError
from core.flows.runner import ApplyRunner
from core.metrics import TOOL_CALLS, TOOL_SECONDS
from core.permissions import Action, Actor
from runtimes.registry import RuntimeRegistry
from tools.visibility import conceal

In = TypeVar("In", bound=BaseModel)
Out = TypeVar("Out", bound=BaseModel)

# A mutating call the database rolled back whole (deadlock, serialization failure) runs again
# this many more times.
RETRIES = 2


@dataclass(frozen=True)
class ToolContext:
    """What every tool call runs with: the core's parts and who is calling."""

    sessions: sessionmaker[Session]
    runtimes: RuntimeRegistry
    runner: ApplyRunner
    actor: Actor
    # Read tools run in these (on SQLite: no write lock) and note the read in the access log.
    reads: Callable[[], Session]
    access: AccessLog
    # The rows of the tool's `first_read`, when the door ran it with the token check.
    first_rows: Sequence[tuple[Any, ...]] | None = None


@dataclass(frozen=True)
class Tool(Generic[In, Out]):
    """A typed tool: the same function behind the agent, REST and the docs."""

    name: str
    description: str
    input_model: type[In]
    output_model: type[Out]
    mutating: bool
    permission: Action
    func: Callable[[ToolContext, Session, In], Out]
    # Reads a runtime's live state (Docker, Kubernetes): it may wait on the network.
    live: bool = False
    # Its core answers a release the caller cannot see exactly as a missing one, so no
    # visibility check reads the release before it (one statement less per call).
    conceals_itself: bool = False
    # The statement (and parameters) its core reads first, if that read does not depend on
    # who asks: a door may send it with the caller's token check, one round trip for both
    # (`authenticate_with`: the statement built once, a SELECT of joins and a WHERE).
    first_read: Callable[[In], tuple[Select[Any], dict[str, Any]]] | None = None

    def parse(self, args: dict[str, Any] | BaseModel) -> In:
        """Validate raw arguments into the input model, or raise InvalidInput."""
        if isinstance(args, self.input_model):
            return args
        raw = args.model_dump() if isinstance(args, BaseModel) else args
        try:
            return self.input_model.model_validate(raw)
        except ValidationError as exc:
            raise InvalidInput(
                f"invalid arguments for {self.name}",
                errors=[
                    {"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]}
                    for e in exc.errors()
                ],
            ) from exc

    def run(self, ctx: ToolContext, args: dict[str, Any] | BaseModel) -> Out:
        """Validate the arguments and run the tool in a fresh session; every call is audited.

        A mutating call that succeeds is audited by the state changes it makes; a refused call
        gets a chain event of its own here, and a read a queued line in the access log (out of
        the chain and out of the request: a read never writes). A project or release the caller
        cannot see is refused exactly like a nonexistent one (tools.visibility).
        """
        started = time.perf_counter()
        outcome = "error"  # an unexpected exception: a bug or the database gone
        try:
            parsed = self.parse(args)
            result = self._call(ctx, parsed)
            outcome = "ok"
        except ShipdeckError as exc:
            outcome = exc.code
            # an interrupted call is not a refusal: part of it was done
            action = "interrupted" if isinstance(exc, Interrupted) else "refused"
            self._audit(ctx, args, action, {"error": exc.code, "message": exc.message})
            raise
        finally:
            TOOL_CALLS.labels(self.name, ctx.actor.channel, outcome).inc()
            TOOL_SECONDS.labels(self.name).observe(time.perf_counter() - started)
        if not self.mutating:
            self._audit(ctx, parsed, "read", {})
        return result

    def _call(self, ctx: ToolContext, parsed: In) -> Out:
        """Run the function in a fresh session; retry a mutating call the database undid whole.

        PostgreSQL may end a transaction as a deadlock victim or a serialization failure
        (SQLSTATE 40P01 / 40001) and roll it back. The call runs again only if its session had
        committed nothing yet: work outside the database (a runtime apply, a notification)
        only ever follows a commit, so a call retried here has done nothing anywhere yet. One
        rolled back after an earlier commit ends `Interrupted` (409, audited as such).
        """

        def attempt() -> Out:
            with (ctx.sessions if self.mutating else ctx.reads)() as session:
                try:
                    # held while the call runs: its core finds them in the session
                    _held = conceal(
                        session,
                        ctx.actor,
                        parsed,
                        load=self.mutating,
                        releases=not self.conceals_itself,
                    )
                    return self.func(ctx, session, parsed)
                except Exception as exc:
                    saved = commits(session)
                    if self.mutating and saved and retryable_failure(exc):
                        raise self._interrupted(parsed, saved, exc) from exc
                    raise

        return retrying(attempt, what=self.name, retries=RETRIES if self.mutating else 0)

    def _interrupted(self, parsed: In, saved: int, exc: Exception) -> Interrupted:
        """The typed outcome of a call the database rolled back after part of it committed.

        Running it again from the start is not safe (its first steps stand, and may have
        been followed by work outside the database), so it ends here, audited, with a 409.
        """
        rid = getattr(parsed, "release_id", None)
        rid = rid if isinstance(rid, str) and len(rid) <= 32 else None
        code = sqlstate(exc)
        return Interrupted(
            f"{self.name} was interrupted: the database rolled back its last step ({code}) "
            f"after {saved} earlier step(s) were saved. What was saved stands and nothing "
            f"after it ran; reload {rid or 'the release'} and run {self.name} again if it "
            "still applies",
            tool=self.name,
            sqlstate=code,
            saved_steps=saved,
            **({"release_id": rid} if rid else {}),
        )

    def _audit(
        self, ctx: ToolContext, args: dict[str, Any] | BaseModel, action: str, extra: dict[str, Any]
    ) -> None:
        raw = args.model_dump(mode="json") if isinstance(args, BaseModel) else args
        text = canonical_json(raw) if isinstance(raw, dict) else repr(raw)
        project = raw.get("project") if isinstance(raw, dict) else None
        project = project if isinstance(project, str) and len(project) <= 64 else None
        if action == "read":
            ctx.access.record(actor=ctx.actor, tool=self.name, project=project, args=text)
            return
        with ctx.sessions() as session:
            record(
                session,
                actor=ctx.actor,
                action=action,
                project=project,
                data={"tool": self.name, "args": text[:2000], **extra},
            )
            session.commit()

    def schema(self) -> dict[str, Any]:
        """Name, description, JSON schemas and flags, as `GET /api/v1/tools` lists them."""
        return {
            "name": self.name,
            "description": self.description,
            "mutating": self.mutating,
            "permission": self.permission.value,
            "input_schema": self.input_model.model_json_schema(),
            "output_schema": self.output_model.model_json_schema(),
        }


def tool(
    *,
    mutating: bool,
    permission: Action,
    live: bool = False,
    conceals_itself: bool = False,
    first_read: Callable[[Any], tuple[Select[Any], dict[str, Any]]] | None = None,
) -> Callable[[Callable[[ToolContext, Session, In], Out]], Tool[In, Out]]:
    """Turn a typed function into a Tool; its docstring is the description (`live`: it reads
    a runtime's live state; `conceals_itself`, `first_read`: see `Tool`)."""

    def wrap(func: Callable[[ToolContext, Session, In], Out]) -> Tool[In, Out]:
        hints = get_type_hints(func)
        params = list(inspect.signature(func).parameters)
        return Tool(
            name=func.__name__,
            description=inspect.cleandoc(func.__doc__ or ""),
            input_model=hints[params[2]],
            output_model=hints["return"],
            mutating=mutating,
            permission=permission,
            func=func,
            live=live,
            conceals_itself=conceals_itself,
            first_read=first_read,
        )

    return wrap
