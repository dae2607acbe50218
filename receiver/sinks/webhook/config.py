"""``[sources.NAME.sink]`` with ``type = "webhook"``: an HTTP endpoint receiving each session, signed."""

from __future__ import annotations

from dataclasses import dataclass

from marshmallow import ValidationError, fields, post_load
from standardwebhooks.webhooks import Webhook

from receiver.schemas import Secret, SecretField, StrictSchema, check_http_url, timeout


@dataclass(frozen=True)
class WebhookSinkConfig:
    """An HTTP endpoint receiving each session signed with ``secret`` (``whsec_`` + base64)."""

    url: str
    secret: Secret
    connect_timeout: float = 5.0
    read_timeout: float = 30.0


def _check_webhook_secret(value: Secret) -> None:
    text = value.reveal()
    try:
        ok = text.startswith("whsec_") and Webhook(text) is not None
    except Exception:  # the package raises several unrelated types for malformed base64
        ok = False
    if not ok:
        raise ValidationError('must be a Standard Webhooks secret: "whsec_" followed by base64')


class WebhookSinkSchema(StrictSchema):
    url = fields.String(required=True, validate=check_http_url)
    secret = SecretField(required=True, validate=_check_webhook_secret)
    connect_timeout = timeout(5.0)
    read_timeout = timeout(30.0)

    @post_load
    def make(self, data, **kwargs) -> WebhookSinkConfig:
        return WebhookSinkConfig(**data)
