"""A source's ``[sources.NAME.sink]`` table: where its mapped sessions go.

``type = "recyclic"`` (Recyclic's cashier API), ``"webhook"`` (one signed JSON document per session,
Standard Webhooks) or ``"file"`` (JSON lines, for audits and local work). Without a table a source gets a
``file`` sink named ``forwarded-<source>.jsonl`` next to the ledger, so nothing needs setting up to try it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from marshmallow import INCLUDE, RAISE, Schema, ValidationError, fields, post_load, validate
from standardwebhooks.webhooks import Webhook

from receiver.config import Secret, SecretField, check_http_url

SINK_TYPES = ("recyclic", "webhook", "file")


@dataclass(frozen=True)
class RecyclicSinkConfig:
    """Recyclic's API as the dedicated machine user (role ``admin``). ``url`` includes the path prefix
    (``https://recyclic.example.org/api/v1``); ``pin`` is that user's step-up PIN, needed to close under v2.
    A ``Retry-After`` up to ``max_retry_wait`` seconds is waited for in place; longer ones reschedule."""

    url: str
    username: str
    password: Secret
    pin: Secret | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_retry_wait: float = 30.0


@dataclass(frozen=True)
class WebhookSinkConfig:
    """An HTTP endpoint receiving each session signed with ``secret`` (``whsec_`` + base64)."""

    url: str
    secret: Secret
    connect_timeout: float = 5.0
    read_timeout: float = 30.0


@dataclass(frozen=True)
class FileSinkConfig:
    """A JSON-lines file; ``None`` = ``forwarded-<source>.jsonl`` beside the SQLite ledger. A relative path is
    taken from the ledger's directory."""

    path: Path | None = None


SinkConfig = RecyclicSinkConfig | WebhookSinkConfig | FileSinkConfig


def _check_pin(value: Secret) -> None:
    text = value.reveal()
    if len(text) != 4 or not text.isdigit():
        raise ValidationError("a Recyclic PIN is 4 digits")


def _check_webhook_secret(value: Secret) -> None:
    text = value.reveal()
    try:
        ok = text.startswith("whsec_") and Webhook(text) is not None
    except Exception:  # the package raises several unrelated types for malformed base64
        ok = False
    if not ok:
        raise ValidationError('must be a Standard Webhooks secret: "whsec_" followed by base64')


def _timeout(default: float) -> fields.Float:
    return fields.Float(load_default=default, validate=validate.Range(min=0.1, max=600))


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class RecyclicSinkSchema(_Strict):
    url = fields.String(required=True, validate=check_http_url)
    username = fields.String(required=True, validate=validate.Length(min=1))
    password = SecretField(required=True)
    pin = SecretField(load_default=None, validate=_check_pin)
    connect_timeout = _timeout(5.0)
    read_timeout = _timeout(30.0)
    max_retry_wait = fields.Float(load_default=30.0, validate=validate.Range(min=0, max=600))

    @post_load
    def make(self, data, **kwargs) -> RecyclicSinkConfig:
        return RecyclicSinkConfig(**{**data, "url": data["url"].rstrip("/")})


class WebhookSinkSchema(_Strict):
    url = fields.String(required=True, validate=check_http_url)
    secret = SecretField(required=True, validate=_check_webhook_secret)
    connect_timeout = _timeout(5.0)
    read_timeout = _timeout(30.0)

    @post_load
    def make(self, data, **kwargs) -> WebhookSinkConfig:
        return WebhookSinkConfig(**data)


class FileSinkSchema(_Strict):
    path = fields.String(load_default=None, validate=validate.Length(min=1))

    @post_load
    def make(self, data, **kwargs) -> FileSinkConfig:
        return FileSinkConfig(Path(data["path"]).expanduser() if data["path"] else None)


_BY_TYPE: dict[str, type[Schema]] = {
    "recyclic": RecyclicSinkSchema, "webhook": WebhookSinkSchema, "file": FileSinkSchema,
}


class SinkSchema(Schema):
    """Reads ``type`` then the keys of that sink type (unknown keys refused there)."""

    class Meta:
        unknown = INCLUDE

    type = fields.String(required=True, validate=validate.OneOf(SINK_TYPES))

    @post_load
    def make(self, data, **kwargs) -> SinkConfig:
        kind = data.pop("type")
        return _BY_TYPE[kind]().load(data)
