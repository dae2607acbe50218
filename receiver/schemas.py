"""Shared marshmallow pieces: strict schemas that load into frozen dataclasses, secrets, URLs.

Used by the configuration (:mod:`receiver.config`) and by each sink's own configuration table, which
therefore never import each other.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate


class ModelSchema(Schema):
    """Refuses unknown fields and loads into ``model`` (set by each subclass)."""

    class Meta:
        unknown = RAISE

    model: type = object

    @post_load
    def make(self, data: dict[str, Any], **kwargs) -> Any:
        return self.model(**data)


class StrictSchema(Schema):
    """Refuses unknown keys (a typo in the configuration is an error, not a silent default)."""

    class Meta:
        unknown = RAISE


class Secret:
    """A secret value that refuses to show itself in logs, reprs, tracebacks or error bodies."""

    __slots__ = ("_value", "origin")

    def __init__(self, value: str, origin: str = "inline"):
        self._value = value
        self.origin = origin

    def reveal(self) -> str:
        """The value itself: call this only where it leaves for its destination."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret(<{self.origin}>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class SecretField(fields.Field):
    """A string, ``{env = "NAME"}`` or ``{file = "/path"}``; deserialises to a :class:`Secret`."""

    default_error_messages = {
        "invalid": 'must be a string, {env = "NAME"} or {file = "/path"}',
        "empty": "must not be empty",
        "env_missing": "environment variable {name} is not set",
        "file_missing": "cannot read secret file {path}: {reason}",
    }

    def _deserialize(self, value: Any, attr, data, **kwargs) -> Secret:
        if isinstance(value, str):
            secret = Secret(value, "inline")
        elif isinstance(value, dict) and set(value) == {"env"} and isinstance(value["env"], str):
            name = value["env"]
            if name not in os.environ:
                raise self.make_error("env_missing", name=name)
            secret = Secret(os.environ[name], f"env {name}")
        elif isinstance(value, dict) and set(value) == {"file"} and isinstance(value["file"], str):
            path = Path(value["file"]).expanduser()
            try:
                text = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise self.make_error("file_missing", path=path, reason=exc.strerror or exc) from None
            secret = Secret(text, f"file {path}")
        else:
            raise self.make_error("invalid")
        if not secret.reveal():
            raise self.make_error("empty")
        return secret


def check_http_url(value: str) -> None:
    """An http(s) base URL without credentials, query or fragment (those belong elsewhere)."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValidationError("must be an http(s) URL")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValidationError("must not carry credentials, a query or a fragment")


def timeout(default: float) -> fields.Float:
    """A network timeout in seconds (0.1 to 600)."""
    return fields.Float(load_default=default, validate=validate.Range(min=0.1, max=600))
