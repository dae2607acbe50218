"""The webhook sink: POST each mapped session as one JSON document signed per Standard Webhooks.

Headers ``webhook-id`` (stable for a session and its content: a retry carries the same id, so the receiver
can deduplicate, as the specification asks it to), ``webhook-timestamp`` and ``webhook-signature`` come from
the ``standardwebhooks`` package. A 2xx answer is delivery. 429, 5xx and network failures are retried by the
worker (``Retry-After`` honoured); any other answer needs a person. An unknown outcome is settled the way the
specification intends: the same document is sent again, with the same id.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
from standardwebhooks.webhooks import Webhook

from receiver.forward import Delivery, DeliveryHeld, DeliveryRetry
from receiver.forward.config import WebhookSinkConfig
from receiver.forward.document import session_document
from receiver.forward.recyclic_client import USER_AGENT, retry_after_seconds
from receiver.ledger import Entry, Ledger
from receiver.mapping.model import MappedSession


class WebhookSink:
    kind = "webhook"

    def __init__(self, config: WebhookSinkConfig, *, transport: httpx.BaseTransport | None = None):
        self.config = config
        self._signer = Webhook(config.secret.reveal())
        self._http = httpx.Client(
            headers={"User-Agent": USER_AGENT},
            timeout=httpx.Timeout(config.read_timeout, connect=config.connect_timeout, pool=config.connect_timeout),
            follow_redirects=False,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def deliver(self, entry: Entry, mapped: MappedSession, ledger: Ledger) -> Delivery:
        document = session_document(entry, mapped)
        record = ledger.forwards_of(entry.id).get(("document", mapped.session_id))
        if record is not None and record.status == "done" and record.idempotency_key == document.id:
            return Delivery(self.kind, document.id)
        ledger.record_forward(entry.id, "document", mapped.session_id, status="sending", idempotency_key=document.id)
        sent_at = datetime.now(UTC)
        headers = {
            "Content-Type": "application/json",
            "webhook-id": document.id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": self._signer.sign(document.id, sent_at, document.body),
            "X-Request-Id": uuid.uuid4().hex,
        }
        try:
            response = self._http.post(self.config.url, content=document.body.encode(), headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryRetry(f"webhook {self.config.url} unreachable ({type(exc).__name__}: {exc})") from None
        status = response.status_code
        if 200 <= status < 300:
            ledger.record_forward(entry.id, "document", mapped.session_id, status="done", sink_id=document.id,
                                  idempotency_key=document.id, detail=f"HTTP {status}")
            return Delivery(self.kind, document.id)
        if status == 429 or status >= 500:
            raise DeliveryRetry(f"webhook {self.config.url} answered {status}", retry_after_seconds(response))
        raise DeliveryHeld(
            f"Le destinataire du webhook ({self.config.url}) refuse la session (HTTP {status}). Vérifiez l'adresse "
            "et le secret partagé (secret) de la section [sink] de cette source, puis libérez la session.",
            f"webhook answered {status}: {response.text[:200]}")
