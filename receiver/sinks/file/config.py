"""``[sources.NAME.sink]`` with ``type = "file"``: JSON lines, for audits and local work."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from marshmallow import fields, post_load, validate

from receiver.schemas import StrictSchema


@dataclass(frozen=True)
class FileSinkConfig:
    """A JSON-lines file; ``None`` = ``forwarded-<source>.jsonl`` beside the SQLite ledger. A relative path is
    taken from the ledger's directory."""

    path: Path | None = None


class FileSinkSchema(StrictSchema):
    path = fields.String(load_default=None, validate=validate.Length(min=1))

    @post_load
    def make(self, data, **kwargs) -> FileSinkConfig:
        return FileSinkConfig(Path(data["path"]).expanduser() if data["path"] else None)
