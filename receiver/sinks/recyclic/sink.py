"""The Recyclic sink: open a cash session, post one sale per Paheko tab, close per policy — each exactly once.

Recyclic has no ingest endpoint and stores no external id, so the ledger's forward log is the map from
Paheko ids to Recyclic ids. Every step records ``sending`` before its request leaves and ``done`` (with the
Recyclic id) right after the answer. A ``sending`` record found later means the outcome is unknown; it is
settled by reading the Recyclic session back before anything is posted again:

- a sale: v2 sales carry their Paheko ids in ``note`` (:func:`~receiver.mapping.mapper.parse_sale_note`);
  Recyclic 1.3 drops the note, so there the session's sales that no ``done`` record claims are matched by
  content, and an ambiguous case is held for a person. This holds days later, when Recyclic's 24 h
  idempotency keys are gone.
- the close: the session's ``status`` says whether it happened; a retry reuses the ``Idempotency-Key``.
- the opening: Recyclic has no session listing, so a lost opening cannot be found again. Under v2 (back-dated
  openings never conflict) a new session is opened and the possible empty orphan is reported; a sale is only
  ever posted to the session whose id was recorded, so no sale can be duplicated. Under 1.3 a second live
  opening is refused when the first one did happen: that refusal is held with instructions.

A step-up PIN refusal (v2 close) is remembered in the ledger, for this Recyclic user and this PIN, so no
other session retries it: five wrong PINs lock the account. A person releasing a session tries once more.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from urllib.parse import urlsplit

from marshmallow import EXCLUDE, Schema, ValidationError, fields

from receiver.forward import Delivery, DeliveryHeld, DeliveryRetry
from receiver.forward.config import RecyclicSinkConfig
from receiver.forward.recyclic_client import (
    PIN_CODES, RecyclicAuthError, RecyclicClient, RecyclicError, RecyclicRateLimited, RecyclicRefused,
    RecyclicUnavailable,
)
from receiver.ledger import Entry, Forward, Ledger
from receiver.ledger.store import utcnow
from receiver.mapping.mapper import parse_sale_note
from receiver.mapping.model import MappedSale, MappedSession

log = logging.getLogger("receiver.forward.recyclic")

#: Recyclic stores a sale line's category in a 50-character column; longer crashes it (500).
CATEGORY_MAX = 50
CENT = Decimal("0.01")


# -- wire format: cents → float euros, grams → float kilograms, exactly the published fields ---------------


def euros(cents: int) -> float:
    return float(Decimal(cents) / 100)


def kilograms(grams: int) -> float:
    return float(Decimal(grams) / 1000)


def _cents(euros_value: Any) -> int:
    return int((Decimal(str(euros_value)) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _grams(kilograms_value: Any) -> int:
    return int((Decimal(str(kilograms_value)) * 1000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


class _Euros(fields.Field):
    def _serialize(self, value: int, attr, obj, **kwargs) -> float:
        return euros(value)


class _Kilograms(fields.Field):
    def _serialize(self, value: int, attr, obj, **kwargs) -> float:
        return kilograms(value)


class OpenBody(Schema):
    """``POST /cash-sessions/`` under Recyclic 1.3 (no back-dating)."""

    operator_id = fields.String()
    site_id = fields.String()
    register_id = fields.String(allow_none=True)
    initial_amount = _Euros(attribute="initial_cents")


class OpenBodyV2(OpenBody):
    """v2 adds ``opened_at``, with its offset (Paheko's opening time: "saisie différée")."""

    opened_at = fields.AwareDateTime(format="iso")


class ItemBody(Schema):
    category = fields.String(attribute="category_id")
    quantity = fields.Integer()
    weight = _Kilograms(attribute="weight_grams")
    unit_price = fields.Function(
        lambda item: float((Decimal(item.total_cents) / item.quantity / 100).quantize(CENT, ROUND_HALF_UP)))
    total_price = _Euros(attribute="total_cents")
    notes = fields.String(allow_none=True)


class PaymentBody(Schema):
    payment_method = fields.String(attribute="code")
    amount = _Euros(attribute="amount_cents")


class LegacySaleBody(Schema):
    """``POST /sales/`` under 1.3: one payment method per sale, no note."""

    cash_session_id = fields.String()
    items = fields.List(fields.Nested(ItemBody))
    total_amount = _Euros(attribute="total_cents")
    payment_method = fields.Function(lambda data: data["sale"].payments[0].code)


class SaleBody(Schema):
    """``POST /sales/`` under v2: ``payments[]`` and the ``note`` that carries the Paheko ids."""

    cash_session_id = fields.String()
    items = fields.List(fields.Nested(ItemBody))
    total_amount = _Euros(attribute="total_cents")
    payments = fields.List(fields.Nested(PaymentBody))
    note = fields.String()


class CloseBody(Schema):
    actual_amount = _Euros(attribute="actual_cents")
    variance_comment = fields.String()


# -- what is read back ----------------------------------------------------------------------------------


class _Loose(Schema):
    class Meta:
        unknown = EXCLUDE


class _RemoteSaleRef(_Loose):
    id = fields.String(required=True)
    note = fields.String(load_default=None, allow_none=True)


class _RemoteSession(_Loose):
    id = fields.String(required=True)
    status = fields.String(required=True)
    sales = fields.List(fields.Nested(_RemoteSaleRef), load_default=list)


class _Created(_Loose):
    id = fields.String(required=True)


#: Schema instances are stateless: build them once, not per sale (nested schemas are costly to set up).
_SCHEMAS: dict[str, Schema] = {
    "open_v2": OpenBodyV2(), "open_legacy": OpenBody(), "sale_v2": SaleBody(), "sale_legacy": LegacySaleBody(),
    "close": CloseBody(), "created": _Created(), "remote_session": _RemoteSession(),
}


def _created(data: Any, what: str) -> str:
    try:
        return _SCHEMAS["created"].load(data if isinstance(data, dict) else {})["id"]
    except ValidationError:
        raise DeliveryRetry(f"Recyclic answered the {what} without an id: outcome unknown, settled next time") from None


def _sale_shape(body: dict[str, Any]) -> tuple:
    """What identifies a sale's content, from the body sent or from ``GET /sales/{id}``."""
    items = sorted((str(i.get("category")), int(i.get("quantity") or 0), _cents(i.get("total_price") or 0),
                    _grams(i.get("weight") or 0)) for i in body.get("items") or [])
    return _cents(body.get("total_amount") or 0), str(body.get("payment_method") or "").lower(), tuple(items)


# -- the sink --------------------------------------------------------------------------------------------


class RecyclicSink:
    """Delivers mapped sessions to one Recyclic instance (profile per session: ``mapped.profile``)."""

    kind = "recyclic"

    def __init__(self, config: RecyclicSinkConfig, *, client: RecyclicClient | None = None):
        self.config = config
        self.client = client or RecyclicClient(config)

    def close(self) -> None:
        self.client.close()

    def deliver(self, entry: Entry, mapped: MappedSession, ledger: Ledger) -> Delivery:
        try:
            return _Delivering(self, entry, mapped, ledger).run()
        except RecyclicRateLimited as exc:
            raise DeliveryRetry(str(exc), exc.retry_after) from None
        except RecyclicUnavailable as exc:
            raise DeliveryRetry(str(exc)) from None
        except RecyclicAuthError as exc:
            raise DeliveryHeld(
                f"Recyclic refuse l'utilisateur « {self.config.username} » du récepteur ({exc.status}) : vérifiez "
                "username et password dans la section [sink] de cette source, et que cet utilisateur a le rôle "
                "admin dans Recyclic, puis libérez la session.", str(exc)) from None
        except RecyclicRefused as exc:
            raise DeliveryHeld(
                f"Recyclic refuse la requête ({_said(exc)}). Corrigez la cause (correspondances, données), puis "
                "libérez la session.", str(exc)) from None


def _said(exc: RecyclicError) -> str:
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail, ensure_ascii=False)
    return f"{exc.status} {exc.code or ''} : {detail}".replace("  ", " ")


class _Delivering:
    """One delivery attempt of one session (holds the forward log as read at the start)."""

    def __init__(self, sink: RecyclicSink, entry: Entry, mapped: MappedSession, ledger: Ledger):
        self.sink, self.client, self.entry, self.mapped, self.ledger = sink, sink.client, entry, mapped, ledger
        self.forwards: dict[tuple[str, int], Forward] = ledger.forwards_of(entry.id)
        self.notes: list[str] = []

    def record(self, kind: str, paheko_id: int, status: str, **values: Any) -> None:
        self.ledger.record_forward(self.entry.id, kind, paheko_id, status=status, **values)

    def run(self) -> Delivery:
        mapped = self.mapped
        session_record = self.forwards.get(("session", mapped.session_id))
        if mapped.opening is None or not mapped.sales:
            if session_record is None:
                self.record("session", mapped.session_id, "done",
                            detail="Aucune vente à transmettre : aucune session ouverte dans Recyclic.")
            return Delivery(RecyclicSink.kind, session_record.sink_id if session_record else None)
        for sale in mapped.sales:  # refuse before opening anything in Recyclic
            self.check_sale(sale)
        session_id = self.open(session_record)
        sales = self.post_sales(session_id)
        closed = mapped.close_session and mapped.closing is not None and self.close_session(session_id)
        return Delivery(RecyclicSink.kind, session_id, sales, bool(closed), tuple(self.notes))

    # -- opening ------------------------------------------------------------------------------------

    def open(self, record: Forward | None) -> str:
        mapped, opening = self.mapped, self.mapped.opening
        if record is not None and record.status == "done" and record.sink_id:
            return record.sink_id
        lost = record is not None and record.status == "sending"
        schema = _SCHEMAS[f"open_{mapped.profile}"]
        body = schema.dump(opening)
        self.record("session", mapped.session_id, "sending")
        try:
            answer = self.client.post("cash-sessions/", body)
        except RecyclicRefused as exc:
            if lost and mapped.profile == "legacy" and exc.status == 400:
                raise DeliveryHeld(
                    "Une ouverture de session précédente dans Recyclic est restée sans réponse, et Recyclic "
                    f"refuse maintenant d'en ouvrir une autre ({_said(exc)}) : la première a sans doute été "
                    "créée. Dans Recyclic, clôturez la session ouverte (vide) de cet opérateur ou de cette "
                    "caisse, puis libérez la session.", str(exc)) from None
            raise DeliveryHeld(
                f"Recyclic refuse d'ouvrir la session de caisse ({_said(exc)}). Vérifiez le site, la caisse et "
                "l'opérateur de la correspondance, et qu'aucune autre session n'est ouverte sur cette caisse "
                "ou pour cet opérateur, puis libérez la session.", str(exc)) from None
        session_id = _created(answer, "session opening")
        detail = None
        if lost and mapped.profile == "v2":
            detail = (f"Une tentative d'ouverture précédente est restée sans réponse : une session vide a pu être "
                      f"créée dans Recyclic (site {opening.site_id}, caisse {opening.register_id or 'aucune'}, "
                      f"ouverte le {opening.opened_at.isoformat()}). Elle ne contient aucune vente.")
            self.notes.append(detail)
            log.warning("session opening retried after a lost answer", extra={
                "event": "forward", "source": mapped.source, "session_id": mapped.session_id})
        self.record("session", mapped.session_id, "done", sink_id=session_id, detail=detail)
        return session_id

    # -- sales --------------------------------------------------------------------------------------

    def post_sales(self, session_id: str) -> dict[int, str]:
        mapped = self.mapped
        done = {s.tab_id: r.sink_id for s in mapped.sales
                if (r := self.forwards.get(("sale", s.tab_id))) is not None and r.status == "done" and r.sink_id}
        if any((r := self.forwards.get(("sale", s.tab_id))) is not None and r.status == "sending"
               for s in mapped.sales if s.tab_id not in done):
            done.update(self.settle_sales(session_id, done))
        for sale in mapped.sales:
            if sale.tab_id not in done:
                done[sale.tab_id] = self.post_sale(session_id, sale)
        return done

    def settle_sales(self, session_id: str, done: dict[int, str]) -> dict[int, str]:
        """Sales whose answer was lost, found in the Recyclic session (recorded ``done`` here)."""
        remote = self.read_session(session_id)
        pending = [s for s in self.mapped.sales if s.tab_id not in done]
        if self.mapped.profile == "v2":
            wanted = {s.tab_id for s in pending}
            found = {}
            for sale in remote["sales"]:
                ids = parse_sale_note(sale["note"])
                if ids and ids[:2] == (self.mapped.source, self.mapped.session_id) and ids[2] in wanted:
                    found.setdefault(ids[2], sale["id"])
        else:
            found = self.match_legacy(remote, pending, set(done.values()))
        for tab_id, sale_id in found.items():
            self.record("sale", tab_id, "done", sink_id=sale_id,
                        idempotency_key=next(s.idempotency_key for s in pending if s.tab_id == tab_id),
                        detail="Retrouvée dans Recyclic après une réponse perdue.")
        if remote["status"] != "open" and len(found) < len(pending):
            raise DeliveryHeld(
                f"La session Recyclic {session_id} n'est plus ouverte ({remote['status']}) alors que "
                f"{len(pending) - len(found)} ticket(s) restent à transmettre. Vérifiez-la dans Recyclic ; "
                "pour tout renvoyer dans une nouvelle session, il faut une intervention technique.")
        return found

    def match_legacy(self, remote: dict[str, Any], pending: list[MappedSale], claimed: set[str]) -> dict[int, str]:
        """Recyclic 1.3 drops the note: a sale of the session that no ``done`` record claims can only be the
        one sale sent with a lost answer (sales are sent one at a time), if its content matches."""
        unclaimed = [s["id"] for s in remote["sales"] if s["id"] not in claimed]
        if not unclaimed:
            return {}
        sending = [s for s in pending if (r := self.forwards.get(("sale", s.tab_id))) and r.status == "sending"]
        if len(unclaimed) == 1 and len(sending) == 1:
            remote_sale = self.client.get(f"sales/{unclaimed[0]}")
            if _sale_shape(remote_sale) == _sale_shape(self.sale_body("-", sending[0])):
                return {sending[0].tab_id: unclaimed[0]}
        raise DeliveryHeld(
            f"Impossible de savoir quelles ventes de la session Recyclic {remote['id']} correspondent aux tickets "
            f"dont l'envoi est resté sans réponse (Recyclic 1.3 ne garde pas la référence Paheko) : "
            f"{len(unclaimed)} vente(s) non rapprochée(s). Vérifiez la session dans Recyclic avant de libérer "
            "celle-ci : un ticket déjà présent serait envoyé une seconde fois.")

    def read_session(self, session_id: str) -> dict[str, Any]:
        try:
            data = self.client.get(f"cash-sessions/{session_id}")
        except RecyclicRefused as exc:
            if exc.status == 404:
                raise DeliveryHeld(
                    f"La session Recyclic {session_id}, ouverte pour cette session Paheko, n'existe plus dans "
                    "Recyclic (supprimée ?). Vérifiez dans Recyclic avant toute reprise.", str(exc)) from None
            raise
        try:
            return _SCHEMAS["remote_session"].load(data if isinstance(data, dict) else {})
        except ValidationError as exc:
            raise DeliveryRetry(f"unexpected cash session read back from Recyclic: {exc.messages}") from None

    def check_sale(self, sale: MappedSale) -> None:
        """Hold what Recyclic would mishandle: a category over 50 characters crashes it (a 500, retried
        forever), a zero quantity has no unit price, 1.3 takes a single payment method per sale."""
        too_long = [i.category_id for i in sale.items if not 0 < len(i.category_id) <= CATEGORY_MAX]
        if too_long or any(i.quantity < 1 for i in sale.items):
            raise DeliveryHeld(
                f"Le ticket {sale.tab_id} ne peut pas être envoyé tel quel à Recyclic (catégorie vide ou de plus "
                f"de {CATEGORY_MAX} caractères, ou quantité nulle) : vérifiez les correspondances de catégories.",
                f"categories {too_long!r}")
        if self.mapped.profile == "legacy" and len(sale.payments) != 1:
            raise DeliveryHeld(
                f"Le ticket {sale.tab_id} a {len(sale.payments)} moyens de paiement : Recyclic 1.3 n'en accepte "
                "qu'un par vente. Revoyez la politique mixed_methods de la correspondance.")

    def sale_body(self, session_id: str, sale: MappedSale) -> dict[str, Any]:
        data = {"cash_session_id": session_id, "items": sale.items, "total_cents": sale.total_cents,
                "payments": sale.payments, "note": sale.note, "sale": sale}
        return _SCHEMAS[f"sale_{self.mapped.profile}"].dump(data)

    def post_sale(self, session_id: str, sale: MappedSale) -> str:
        body = self.sale_body(session_id, sale)
        self.record("sale", sale.tab_id, "sending", idempotency_key=sale.idempotency_key)
        try:
            answer = self.client.post("sales/", body, headers={"Idempotency-Key": sale.idempotency_key})
        except RecyclicRefused as exc:
            if exc.code == "IDEMPOTENCY_KEY_CONFLICT":
                raise DeliveryHeld(
                    f"Recyclic a déjà reçu le ticket {sale.tab_id} avec un contenu différent (même clé "
                    f"d'idempotence « {sale.idempotency_key} ») : la session a changé dans Paheko ou dans la "
                    "correspondance après un premier envoi. Vérifiez la vente dans Recyclic (note "
                    f"« {sale.note} »), supprimez-la si elle est fausse, puis libérez la session.",
                    str(exc)) from None
            raise DeliveryHeld(
                f"Recyclic refuse le ticket {sale.tab_id} ({_said(exc)}). Corrigez la correspondance en cause, "
                "puis libérez la session.", str(exc)) from None
        sale_id = _created(answer, f"sale of tab {sale.tab_id}")
        self.record("sale", sale.tab_id, "done", sink_id=sale_id, idempotency_key=sale.idempotency_key)
        return sale_id

    # -- closing ------------------------------------------------------------------------------------

    def close_session(self, session_id: str) -> bool:
        mapped = self.mapped
        record = self.forwards.get(("close", mapped.session_id))
        if record is not None and record.status == "done":
            return True
        if record is not None and record.status == "sending":
            remote = self.read_session(session_id)
            if remote["status"] != "open":
                self.record("close", mapped.session_id, "done", sink_id=session_id,
                            detail=f"Retrouvée {remote['status']} dans Recyclic après une réponse perdue.")
                return True
        key = f"paheko-recyclic:{mapped.source}:{mapped.session_id}:close"
        headers = {"Idempotency-Key": key}
        pin = self.pin() if mapped.profile == "v2" else None
        if pin is not None:
            headers["X-Step-Up-Pin"] = pin
        self.record("close", mapped.session_id, "sending", idempotency_key=key)
        try:
            answer = self.client.post(f"cash-sessions/{session_id}/close", _SCHEMAS["close"].dump(mapped.closing),
                                      headers=headers)
        except RecyclicRefused as exc:
            if exc.code in PIN_CODES:
                self.remember_pin_refusal(pin or "", exc)
            raise DeliveryHeld(self.close_refusal(exc), str(exc)) from None
        if pin is not None:
            self.ledger.set_value(self.pin_key, "")
        deleted = isinstance(answer, dict) and answer.get("deleted") is True
        self.record("close", mapped.session_id, "done", sink_id=session_id,
                    detail="Session vide supprimée par Recyclic à la clôture." if deleted else None)
        return True

    def close_refusal(self, exc: RecyclicRefused) -> str:
        if exc.code == "STEP_UP_LOCKED":
            return ("Recyclic a verrouillé le code PIN de l'utilisateur du récepteur (trop d'essais erronés, "
                    "15 minutes). Corrigez pin dans la section [sink] de cette source (ou le PIN de cet "
                    "utilisateur dans Recyclic), attendez la fin du verrouillage, puis libérez la session.")
        if exc.code in PIN_CODES:
            return ("Recyclic refuse le code PIN configuré pour clôturer la session. Aucune autre clôture ne "
                    "sera tentée avec ce PIN (5 erreurs verrouillent le compte) : corrigez pin dans la section "
                    "[sink] de cette source, ou définissez ce PIN pour l'utilisateur dans Recyclic, puis libérez "
                    "la session.")
        if exc.code == "PAHEKO_SYNC_FINAL_ACTION_REFUSED":
            return ("Recyclic refuse de clôturer la session : aucune correspondance de clôture Paheko n'existe "
                    "pour ce site ou cette caisse dans Recyclic. Créez-la dans Recyclic, ou désactivez la "
                    "clôture (close_session = false dans la correspondance), puis libérez la session.")
        return (f"Recyclic refuse de clôturer la session ({_said(exc)}). Les ventes sont transmises ; corrigez "
                "la cause, puis libérez la session.")

    # -- the PIN guard: a refused PIN is never sent again by the worker ---------------------------------

    @property
    def pin_key(self) -> str:
        """Ledger key of the last PIN refusal, per Recyclic user (the lock-out is per user)."""
        config = self.sink.config
        return f"forward.recyclic.pin_refused:{config.username}@{urlsplit(config.url).netloc}"

    def pin_fingerprint(self, pin: str) -> str:
        """Keyed by the password, so that the ledger alone does not reveal a 4-digit PIN."""
        key = self.sink.config.password.reveal().encode()
        return hmac.new(key, f"step-up-pin:{pin}".encode(), hashlib.sha256).hexdigest()[:32]

    def pin(self) -> str:
        """The configured PIN, unless Recyclic already refused it and no person released this session since."""
        config = self.sink.config
        if config.pin is None:
            raise DeliveryHeld(
                "La clôture des sessions est demandée mais aucun code PIN n'est configuré : Recyclic l'exige "
                "(X-Step-Up-Pin). Ajoutez pin dans la section [sink] de cette source, ou désactivez la clôture "
                "(close_session = false), puis libérez la session.")
        pin = config.pin.reveal()
        raw = self.ledger.get_value(self.pin_key)
        if raw:
            mark = json.loads(raw)
            refused_at = datetime.fromisoformat(mark["at"])
            released = any(change["from_state"] == "held" and change["at"] > refused_at
                           for change in self.ledger.history(self.entry.id))
            if mark["fingerprint"] == self.pin_fingerprint(pin) and not released:
                raise DeliveryHeld(
                    f"Recyclic a refusé ce code PIN le {refused_at:%d/%m/%Y à %H:%M} UTC ({mark['code']}) : la "
                    "clôture n'est pas tentée à nouveau avec lui (5 erreurs verrouillent le compte). Corrigez pin "
                    "dans la section [sink] de cette source, ou ce PIN dans Recyclic, puis libérez la session.")
        return pin

    def remember_pin_refusal(self, pin: str, exc: RecyclicRefused) -> None:
        self.ledger.set_value(self.pin_key, json.dumps({
            "fingerprint": self.pin_fingerprint(pin), "at": utcnow().isoformat(), "code": exc.code}))
