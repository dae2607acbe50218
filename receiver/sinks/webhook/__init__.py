"""The webhook sink: each session as one signed JSON document (Standard Webhooks)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from receiver.sinks.webhook.config import WebhookSinkConfig
from receiver.sinks.webhook.config import WebhookSinkSchema as ConfigSchema

if TYPE_CHECKING:
    from receiver.ledger import Ledger
    from receiver.sinks.webhook.sink import WebhookSink

KIND = "webhook"
Config = WebhookSinkConfig

__all__ = ["KIND", "Config", "ConfigSchema", "build"]


def build(config: WebhookSinkConfig, *, source_name: str, ledger: Ledger) -> WebhookSink:
    from receiver.sinks.webhook.sink import WebhookSink

    return WebhookSink(config)
