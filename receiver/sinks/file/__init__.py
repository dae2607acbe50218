"""The file sink: each session as one JSON line, appended and fsync'd (audits, local work)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from receiver.sinks.file.config import FileSinkConfig
from receiver.sinks.file.config import FileSinkSchema as ConfigSchema

if TYPE_CHECKING:
    from receiver.ledger import Ledger
    from receiver.sinks.file.sink import FileSink

KIND = "file"
Config = FileSinkConfig

__all__ = ["KIND", "Config", "ConfigSchema", "build"]


def build(config: FileSinkConfig, *, source_name: str, ledger: Ledger) -> FileSink:
    from receiver.sinks.file.sink import FileSink

    return FileSink(file_path(config.path, source_name, ledger.url))


def file_path(path: Path | None, source_name: str, ledger_url: str) -> Path:
    """An absolute path as given; a relative one (or the default name) beside a SQLite ledger."""
    if path is not None and path.is_absolute():
        return path
    prefix = "sqlite:///"
    if not ledger_url.startswith(prefix) or ledger_url == prefix + ":memory:":
        raise ValueError(f"the file sink of source {source_name!r} needs an absolute path: "
                         "the ledger is not a SQLite file to put it beside")
    return Path(ledger_url[len(prefix):]).parent / (path or f"forwarded-{source_name}.jsonl")
