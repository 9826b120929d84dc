"""The frames a chat session receives, as validated at the socket, and its error frame."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class UserMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["user_message"]
    text: str = Field(min_length=1, max_length=4000)
    lang: Literal["en", "zh"] | None = Field(
        default=None, description="The client's language; replies follow it (or the text's)."
    )


class CardAction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["card_action"]
    card_id: str = Field(min_length=1, max_length=64)
    action: Literal["confirm", "approve", "reject", "cancel"]
    comment: str | None = Field(default=None, max_length=2000)
    lang: Literal["en", "zh"] | None = None


def error_frame(code: str, message: str, **details: Any) -> dict[str, Any]:
    """The chat protocol's error frame."""
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if details:
        frame["details"] = details
    return frame
