"""One error tree for every rule core enforces; doors map it to HTTP or chat."""

from __future__ import annotations

from typing import Any


class ShipdeckError(Exception):
    """Base of every expected error; carries a stable code and details."""

    code = "error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidInput(ShipdeckError):
    """The request names something impossible or malformed."""

    code = "invalid_input"


class NotAuthenticated(ShipdeckError):
    """No valid token."""

    code = "not_authenticated"


class NotFound(ShipdeckError):
    """A named object does not exist (or is not visible to the actor)."""

    code = "not_found"


class PermissionDenied(ShipdeckError):
    """The actor's role on the project does not allow the action."""

    code = "permission_denied"


class Conflict(ShipdeckError):
    """The action collides with current state (another apply, a reused key, ...)."""

    code = "conflict"


class IllegalTransition(Conflict):
    """The release is not in a state the action can start from."""

    code = "illegal_transition"

    def __init__(self, message: str, *, current: str, **details: Any) -> None:
        super().__init__(message, current_state=current, **details)
        self.current = current


class StateChanged(Conflict):
    """The release changed under the call (another caller moved it first); reload and retry."""

    code = "state_changed"

    def __init__(self, message: str, *, current: str, **details: Any) -> None:
        super().__init__(message, current_state=current, **details)
        self.current = current


class Interrupted(Conflict):
    """The database rolled back a call's last step after earlier steps were saved: what was
    saved stands, nothing after it ran; reload and run the call again if it still applies."""

    code = "interrupted"


class PreviewExpired(Conflict):
    """The preview's TTL passed; re-preview to continue."""

    code = "preview_expired"


class PreviewChanged(Conflict):
    """A stale preview was recomputed and its diff changed: decisions are void; see the new diff."""

    code = "preview_changed"


class Frozen(Conflict):
    """The target is frozen or outside its change windows: submit and apply wait."""

    code = "frozen"


class PromotionRefused(Conflict):
    """The images were never applied on the previous environment of the promotion order."""

    code = "promotion_refused"


class DriftDetected(Conflict):
    """Live state changed since the preview; re-preview to continue."""

    code = "drift_detected"


class RuntimeFailure(ShipdeckError):
    """The target's runtime could not be reached or refused the request."""

    code = "runtime_unavailable"
