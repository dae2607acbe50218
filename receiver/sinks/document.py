"""The JSON document of one mapped session, shared by the webhook and file sinks.

Both carry the session as mapped for Recyclic (:func:`~receiver.sinks.recyclic.mapping.mapped_document`:
same ids, policies and reconciliation), so switching a source between sinks never changes what a session
says. The payload follows Standard Webhooks' recommended shape ``{"type", "timestamp", "data"}``: ``data``
is that mapped session (integer cents and grams), ``timestamp`` is when the receiver first heard of the
session. Its ``id`` is stable for a given session and content, so a retry is recognisable and a session
whose content changed is a new document.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from receiver.ledger import Entry
from receiver.sinks.recyclic.mapping import mapped_document

if TYPE_CHECKING:
    from receiver.config import Source
    from receiver.reread.snapshot import SessionSnapshot

EVENT_TYPE = "paheko.caisse.session"


@dataclass(frozen=True)
class SessionDocument:
    id: str
    session_id: int
    body: str  # canonical JSON text (sorted keys, no spaces, UTF-8)


def session_document(entry: Entry) -> SessionDocument:
    """The document of ``entry.mapped``."""
    data = entry.mapped
    digest = hashlib.sha256(_canonical(data).encode()).hexdigest()[:24]
    document_id = f"paheko-{data['source']}-{data['session_id']}-{digest}"
    payload = {"id": document_id, "type": EVENT_TYPE, "timestamp": entry.created_at.isoformat(), "data": data}
    return SessionDocument(document_id, data["session_id"], _canonical(payload))


class DocumentSink:
    """Base of the sinks that deliver one document per session."""

    kind = "document"

    def map(self, snapshot: SessionSnapshot, source: Source) -> dict[str, Any]:
        return mapped_document(snapshot, source.mapping)


def _canonical(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
