"""Forwarding (last step of the flow: … → map → **forward**): deliver a mapped session to its sink, once.

A sink writes to the ledger's forward log before anything leaves (``sending``) and right after the answer
(``done`` + the sink's id), so that a worker killed at any instant resumes without sending anything twice.
Outcomes other than success are exceptions: :class:`DeliveryRetry` (try again later, the worker
reschedules) and :class:`DeliveryHeld` (a person must act; the reason is French, for the Paheko admin).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from receiver.forward.config import SinkConfig
    from receiver.ledger import Entry, Ledger
    from receiver.mapping.model import MappedSession

__all__ = ["Delivery", "DeliveryHeld", "DeliveryRetry", "Sink", "build_sink"]


@dataclass(frozen=True)
class Delivery:
    """What a sink did for one session. ``reference`` is the sink's id for the session (Recyclic session
    uuid, webhook-id, file line id; ``None`` when nothing had to be sent); ``sales`` maps each Paheko tab id
    to its Recyclic sale id; ``notes`` are French remarks worth showing to an admin."""

    sink: str
    reference: str | None
    sales: Mapping[int, str] = field(default_factory=dict)
    closed: bool = False
    notes: tuple[str, ...] = ()


class DeliveryRetry(Exception):
    """Transient failure (sink down, 5xx, 429, lost answer): deliver again later, after at least
    ``retry_after`` seconds when given. What may have been applied is settled on the next attempt."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class DeliveryHeld(Exception):
    """Only a person can unblock this session: ``reason`` (French) says what to do; ``detail`` is technical."""

    def __init__(self, reason: str, detail: str | None = None):
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail


class Sink(Protocol):
    kind: str

    def deliver(self, entry: Entry, mapped: MappedSession, ledger: Ledger) -> Delivery:
        """Deliver ``mapped`` (of ledger ``entry``) exactly once; raise DeliveryRetry or DeliveryHeld."""

    def close(self) -> None:
        """Release connections."""


def build_sink(config: SinkConfig | None, *, source_name: str, ledger_url: str) -> Sink:
    """The sink for one source (``None``: the default file sink). ``ledger_url`` places a file sink's
    default or relative path beside a SQLite ledger."""
    from receiver.forward.config import FileSinkConfig, RecyclicSinkConfig, WebhookSinkConfig
    from receiver.forward.file import FileSink
    from receiver.forward.recyclic import RecyclicSink
    from receiver.forward.webhook import WebhookSink

    if isinstance(config, RecyclicSinkConfig):
        return RecyclicSink(config)
    if isinstance(config, WebhookSinkConfig):
        return WebhookSink(config)
    if config is None or isinstance(config, FileSinkConfig):
        return FileSink(_file_path(config and config.path, source_name, ledger_url))
    raise TypeError(f"not a sink configuration: {config!r}")


def _file_path(path: Path | None, source_name: str, ledger_url: str) -> Path:
    if path is not None and path.is_absolute():
        return path
    prefix = "sqlite:///"
    if not ledger_url.startswith(prefix) or ledger_url == prefix + ":memory:":
        raise ValueError(f"the file sink of source {source_name!r} needs an absolute path: "
                         "the ledger is not a SQLite file to put it beside")
    return Path(ledger_url[len(prefix):]).parent / (path or f"forwarded-{source_name}.jsonl")
