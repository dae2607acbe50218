"""``[sources.NAME.sink]`` with ``type = "recyclic"``: Recyclic's cashier API, as a dedicated machine user."""

from __future__ import annotations

from dataclasses import dataclass

from typing import Any

from marshmallow import ValidationError, fields, post_load, validate

from receiver.schemas import Secret, SecretField, StrictSchema, check_http_url, timeout
from receiver.sinks.recyclic.mapping.config import PROFILES


@dataclass(frozen=True)
class RecyclicSinkConfig:
    """Recyclic's API as the dedicated machine user (role ``admin``). ``url`` includes the path prefix
    (``https://recyclic.example.org/api/v1``); ``pin`` is that user's step-up PIN, needed to close under v2.
    A ``Retry-After`` up to ``max_retry_wait`` seconds is waited for in place; longer ones reschedule."""

    url: str
    username: str
    password: Secret
    pin: Secret | None = None
    profile: str = "v2"  # the Recyclic line: "v2" (1.4+) or "legacy" (1.3)
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
    profile = fields.String(load_default="v2", validate=validate.OneOf(PROFILES))
    connect_timeout = timeout(5.0)
    read_timeout = timeout(30.0)
    max_retry_wait = fields.Float(load_default=30.0, validate=validate.Range(min=0, max=600))

    @post_load
    def make(self, data, **kwargs) -> RecyclicSinkConfig:
        return RecyclicSinkConfig(**{**data, "url": data["url"].rstrip("/")})


def prepare_source(source: dict[str, Any]) -> dict[str, Any]:
    """Before a ``[sources.NAME]`` table is loaded: the Recyclic line (``profile``) belongs to the sink table,
    and the mapping follows it (what a ticket may carry differs between lines). ``profile`` in the mapping
    table, where it used to be, is still read when the sink table has none; two different values are an
    error."""
    sink, mapping = source.get("sink"), source.get("mapping")
    if not isinstance(sink, dict) or (mapping is not None and not isinstance(mapping, dict)):
        return source
    mapping = dict(mapping or {})
    in_sink, in_mapping = sink.get("profile"), mapping.get("profile")
    if in_sink is not None and in_mapping is not None and in_sink != in_mapping:
        raise ValidationError({"sink": {"profile": [
            f"{in_sink!r} here but {in_mapping!r} in the mapping table: keep profile in the sink table only"]}})
    profile = in_sink if in_sink is not None else in_mapping
    if profile is None:
        return source
    return {**source, "sink": {**sink, "profile": profile}, "mapping": {**mapping, "profile": profile}}
