"""Use cases that span releases, approvals and runtimes: preview, submit, decide, apply."""

# Side effects owned by other packages hook into release transitions when flows load.
import core.approvals.hooks  # noqa: E402, F401
import core.flows.rollback  # noqa: E402, F401
