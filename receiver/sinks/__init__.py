"""Sinks (last steps of the flow: … → **map** → **forward**): where a source's sessions go, one package each.

A sink is the unit of extension. Each destination is one package under ``receiver/sinks/`` that exports

- ``KIND`` — the ``type`` of its ``[sources.NAME.sink]`` table;
- ``ConfigSchema`` — a marshmallow schema loading the rest of that table;
- ``build(config, *, source_name, ledger) -> Sink``;

and one line in :data:`receiver.sinks.registry.PACKAGES`. A :class:`Sink` maps a re-read Paheko session
into its own document (stored in the ledger) and delivers that document. What makes delivery exactly-once —
the forward log written before and after each request, looking in the destination before creating anything,
settling outcomes left unknown — is written once, in :mod:`receiver.sinks.exactly`, and handed to every sink.

Outcomes use the pipeline's one vocabulary (:mod:`receiver.outcomes`): :class:`Delivery` (done),
:class:`~receiver.outcomes.RetryLater` / :class:`~receiver.outcomes.NotSent`,
:class:`~receiver.outcomes.MustAct`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from receiver.outcomes import MustAct, NotSent, RetryLater

if TYPE_CHECKING:
    from receiver.config import Source
    from receiver.ledger import Entry
    from receiver.reread.snapshot import SessionSnapshot
    from receiver.sinks.exactly import ForwardLog

__all__ = ["Delivery", "MustAct", "NotSent", "RetryLater", "Sink"]


@dataclass(frozen=True)
class Delivery:
    """What a sink did for one session. ``reference`` is the sink's id for the session (Recyclic session
    uuid, webhook-id, file line id; ``None`` when nothing had to be sent); ``sales`` maps each Paheko tab id
    to the destination's id; ``notes`` are French remarks worth showing to an admin (also kept in the
    ledger, see :meth:`receiver.ledger.Ledger.notes_of`)."""

    sink: str
    reference: str | None
    sales: Mapping[int, str] = field(default_factory=dict)
    closed: bool = False
    notes: tuple[str, ...] = ()


class Sink(Protocol):
    kind: str

    def map(self, snapshot: SessionSnapshot, source: Source) -> dict[str, Any]:
        """The session as this sink will deliver it, JSON-ready (stored in the ledger); raise MustAct when
        the configuration cannot represent it."""

    def deliver(self, entry: Entry, log: ForwardLog) -> Delivery:
        """Deliver ``entry.mapped`` exactly once, recording every step through ``log``; raise RetryLater or
        MustAct."""

    def close(self) -> None:
        """Release connections."""
