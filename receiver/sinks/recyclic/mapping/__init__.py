"""Paheko's caisse session in Recyclic's model (see :mod:`.mapper`); also the document the webhook and file
sinks carry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from receiver.reread.snapshot import SessionSnapshot
    from receiver.sinks.recyclic.mapping.config import Mapping


def mapped_document(snapshot: SessionSnapshot, mapping: Mapping) -> dict[str, Any]:
    """The session mapped for Recyclic, JSON-ready (raises MappingHeld, a MustAct, with every reason)."""
    from receiver.sinks.recyclic.mapping.mapper import map_session
    from receiver.sinks.recyclic.mapping.model import dump_mapped

    return dump_mapped(map_session(snapshot, mapping))
