"""The webhook sink: POST each mapped session as one JSON document signed per Standard Webhooks.

Headers ``webhook-id`` (stable for a session and its content: a retry carries the same id, so the receiver
can deduplicate, as the specification asks it to), ``webhook-timestamp`` and ``webhook-signature`` come from
the ``standardwebhooks`` package. A 2xx answer is delivery. 429, 5xx and network failures are retried by the
worker (``Retry-After`` honoured); any other answer needs a person. A webhook endpoint cannot be searched,
so an unknown outcome is settled the way the specification intends: the same document is sent again, with
the same id.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
from standardwebhooks.webhooks import Webhook

from receiver.ledger import Entry
from receiver.outbound import USER_AGENT, never_sent, retry_after_seconds
from receiver.outcomes import MustAct, NotSent, RetryLater
from receiver.sinks import Delivery
from receiver.sinks.document import DocumentSink, session_document
from receiver.sinks.exactly import ForwardLog
from receiver.sinks.webhook.config import WebhookSinkConfig


class WebhookSink(DocumentSink):
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

    def deliver(self, entry: Entry, log: ForwardLog) -> Delivery:
        document = session_document(entry)
        log.once("document", document.session_id, key=document.id, create=lambda: self._post(document),
                 detail=None)
        return Delivery(self.kind, document.id)

    def _post(self, document) -> str:
        sent_at = datetime.now(UTC)
        headers = {
            "Content-Type": "application/json",
            "webhook-id": document.id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": self._signer.sign(document.id, sent_at, document.body),
            "X-Request-Id": uuid.uuid4().hex,
        }
        unreachable = f"Le destinataire du webhook ({self.config.url}) est injoignable ; nouvel essai programmé."
        try:
            response = self._http.post(self.config.url, content=document.body.encode(), headers=headers)
        except httpx.HTTPError as exc:
            detail = f"webhook {self.config.url} unreachable ({type(exc).__name__}: {exc})"
            raise (NotSent if never_sent(exc) else RetryLater)(unreachable, detail) from None
        status = response.status_code
        if 200 <= status < 300:
            return document.id
        if status == 429 or status >= 500:
            raise RetryLater(f"Le destinataire du webhook ({self.config.url}) répond {status} ; nouvel essai "
                             "programmé.", f"webhook {self.config.url} answered {status}", retry_after_seconds(response))
        raise MustAct(
            f"Le destinataire du webhook ({self.config.url}) refuse la session (HTTP {status}). Vérifiez l'adresse "
            "et le secret partagé (secret) de la section [sink] de cette source, puis libérez la session.",
            f"webhook answered {status}: {response.text[:200]}")
