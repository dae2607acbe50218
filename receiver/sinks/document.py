"""The JSON document of one mapped session, shared by the webhook and file sinks.

The payload follows Standard Webhooks' recommended shape ``{"type", "timestamp", "data"}``: ``data`` is the
mapped session as :func:`~receiver.mapping.model.dump_mapped` writes it (integer cents and grams), and
``timestamp`` is when the receiver first heard of the session. Its ``id`` is stable for a given session and
content, so a retry is recognisable and a session whose content changed is a new document.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from receiver.ledger import Entry
from receiver.mapping.model import MappedSession, dump_mapped

EVENT_TYPE = "paheko.caisse.session"


@dataclass(frozen=True)
class SessionDocument:
    id: str
    body: str  # canonical JSON text (sorted keys, no spaces, UTF-8)


def session_document(entry: Entry, mapped: MappedSession) -> SessionDocument:
    data = dump_mapped(mapped)
    digest = hashlib.sha256(_canonical(data).encode()).hexdigest()[:24]
    document_id = f"paheko-{mapped.source}-{mapped.session_id}-{digest}"
    payload = {"id": document_id, "type": EVENT_TYPE, "timestamp": entry.created_at.isoformat(), "data": data}
    return SessionDocument(document_id, _canonical(payload))


def _canonical(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
