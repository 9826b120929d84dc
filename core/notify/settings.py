"""Notification and chat-integration settings (`SHIPDECK_*`), apart from the core's own."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.notify.direct import DirectConfig


class NotifySettings(BaseSettings):
    """Where the console lives, the platforms' secrets, and the delivery worker's pace."""

    model_config = SettingsConfigDict(env_prefix="SHIPDECK_", extra="ignore")

    public_url: str | None = Field(
        default=None,
        description="The console's public URL (e.g. https://shipdeck.example); notifications "
        "link back to it. Unset: messages carry no link.",
    )
    slack_signing_secret: SecretStr | None = Field(
        default=None, description="Slack app signing secret; unset: Slack callbacks are refused."
    )
    feishu_verification_token: SecretStr | None = Field(
        default=None,
        description="Feishu/Lark app verification token; unset: Feishu callbacks are refused.",
    )
    feishu_encrypt_key: SecretStr | None = Field(
        default=None,
        description="Feishu/Lark encrypt key: when set, callbacks must be AES-encrypted and "
        "signed with it.",
    )
    slack_response_hosts: list[str] = Field(
        default=["hooks.slack.com"],
        description="Hosts a Slack callback's `response_url` may name; the decision's outcome "
        "is posted there (JSON list). Other hosts are never called.",
    )
    slack_bot_token: SecretStr | None = Field(
        default=None,
        description="Slack app bot token (xoxb-...): direct messages to people with a Slack "
        "identity link (e.g. the requester of a ticket that timed out). Unset: no Slack DMs.",
    )
    slack_api_url: str = Field(
        default="https://slack.com/api/", description="Slack Web API base URL."
    )
    feishu_app_id: str | None = Field(
        default=None, description="Feishu/Lark app id, for direct messages (with the secret)."
    )
    feishu_app_secret: SecretStr | None = Field(
        default=None, description="Feishu/Lark app secret; unset: no Feishu direct messages."
    )
    feishu_api_url: str = Field(
        default="https://open.feishu.cn/open-apis",
        description="Feishu/Lark open API base URL (Lark: https://open.larksuite.com/open-apis).",
    )
    notify_workers: bool = Field(
        default=True, description="Run the notification delivery worker in this server."
    )
    notify_poll_seconds: float = Field(
        default=2, gt=0, le=60, description="How often the worker looks for new audit events."
    )
    notify_max_attempts: int = Field(
        default=8, gt=0, le=50, description="Attempts before a delivery is given up (`dead`)."
    )


def direct_config(settings: NotifySettings) -> DirectConfig:
    """The direct-message credentials of these settings."""
    return DirectConfig(
        slack_bot_token=(
            settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
        ),
        slack_api_url=settings.slack_api_url,
        feishu_app_id=settings.feishu_app_id,
        feishu_app_secret=(
            settings.feishu_app_secret.get_secret_value() if settings.feishu_app_secret else None
        ),
        feishu_api_url=settings.feishu_api_url,
    )
