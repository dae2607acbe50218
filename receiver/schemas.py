"""Shared marshmallow base: strict schemas that load straight into frozen dataclasses."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, post_load


class ModelSchema(Schema):
    """Refuses unknown fields and loads into ``model`` (set by each subclass)."""

    class Meta:
        unknown = RAISE

    model: type = object

    @post_load
    def make(self, data: dict[str, Any], **kwargs) -> Any:
        return self.model(**data)
