"""``[sources.NAME.sink]`` with ``type = "recyclic"``: Recyclic's cashier API, as a dedicated machine user."""

from __future__ import annotations

from dataclasses import dataclass

from marshmallow import ValidationError, fields, post_load, validate

from receiver.schemas import Secret, SecretField, StrictSchema, check_http_url, timeout


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


def _check_pin(value: Secret) -> None:
    text = value.reveal()
    if len(text) != 4 or not text.isdigit():
        raise ValidationError("a Recyclic PIN is 4 digits")


class RecyclicSinkSchema(StrictSchema):
    url = fields.String(required=True, validate=check_http_url)
    username = fields.String(required=True, validate=validate.Length(min=1))
    password = SecretField(required=True)
    pin = SecretField(load_default=None, validate=_check_pin)
    connect_timeout = timeout(5.0)
    read_timeout = timeout(30.0)
    max_retry_wait = fields.Float(load_default=30.0, validate=validate.Range(min=0, max=600))

    @post_load
    def make(self, data, **kwargs) -> RecyclicSinkConfig:
        return RecyclicSinkConfig(**{**data, "url": data["url"].rstrip("/")})
