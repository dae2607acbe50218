"""The Recyclic sink: open a cash session, post one sale per Paheko tab, close per policy — each exactly once.

Recyclic has no ingest endpoint and stores no external id, but **its own data is the record** of what was
forwarded; the ledger's forward log is a cache of it. Every step goes through
:meth:`~receiver.sinks.exactly.ForwardLog.once`: a ``done`` record is trusted; otherwise Recyclic is searched
first and what it holds is adopted; only what is missing is created. So a ledger restored from any backup,
deleted, or holding a ``sending`` record whose answer was lost never makes a second session or sale:

- the session (v2): listed with ``GET /cash-sessions/`` (site, register, around Paheko's opening time,
  empty sessions included) and matched on the opening time (v2 back-dates it): Paheko's second, whose
  microseconds carry a marker of the Paheko session, so that two sessions opened the same second at the
  same place never take (or close) each other's; then checked by the notes of its sales. An empty extra session (a lost opening) is closed, which deletes it, and reported.
  Recyclic 1.3 cannot back-date: a session is only found again after a lost opening (the empty open
  session of the replay register), and an "already open" refusal is retried or adopted, never held;
- a sale (v2): by its ``note``, which names the source, the Paheko session and the ticket
  (:func:`~receiver.sinks.recyclic.profiles.sale_note`), in the session's read-back — days later too,
  when Recyclic's 24 h idempotency keys are gone. 1.3 drops the note: a lost answer is settled by content
  (an ambiguous case is held for a person), and only the ledger remembers what was sent;
- the close: the session's ``status``; a retry reuses the ``Idempotency-Key``.

Logging in happens before anything is recorded, and a request that never left (refused connection, DNS,
TLS) records nothing: neither leaves an outcome to settle. A step-up PIN refusal (v2 close) is remembered
in the ledger, for this Recyclic user and this PIN, so no other session retries it: five wrong PINs lock
the account. A person releasing a session tries once more.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from marshmallow import ValidationError

from receiver.ledger import Entry
from receiver.ledger.store import CHANGED_AFTER_SENDING, utcnow
from receiver.outcomes import MustAct, NotSent, RetryLater
from receiver.sinks import Delivery
from receiver.sinks.exactly import ForwardLog
from receiver.sinks.recyclic.client import (
    PIN_CODES, LedgerLoginLog, RecyclicAuthError, RecyclicClient, RecyclicError, RecyclicRateLimited,
    RecyclicRefused, RecyclicUnavailable,
)
from receiver.sinks.recyclic.config import RecyclicSinkConfig
from receiver.sinks.recyclic.mapping import mapped_document
from receiver.sinks.recyclic.mapping.mapper import euros
from receiver.sinks.recyclic.mapping.model import MappedSale, MappedSession, load_mapped
from receiver.sinks.recyclic.profiles import (
    CLOSE_BODY, CREATED, PROFILES, REMOTE_SESSION, cents, load_remote, marked_opening_time, opening_marker,
    parse_sale_note, sale_shape,
)

log = logging.getLogger("receiver.sinks.recyclic")

#: Recyclic stores a sale line's category in a 50-character column; longer crashes it (500).
CATEGORY_MAX = 50
#: Sessions listed per page (Recyclic's maximum).
PAGE = 100
#: Pages read at most when looking for a session (a filter Recyclic would ignore must not mean a full scan).
MAX_PAGES = 20
#: Listed around Paheko's opening time (Recyclic filters ``opened_at``; the margin absorbs clock or zone slips).
LISTING_WINDOW = timedelta(minutes=10)
#: Recyclic's refusal of a live opening while another session is open (v2 French; 1.3 English).
ALREADY_OPEN = re.compile(r"déjà ouverte|already (has an )?open", re.IGNORECASE)
#: How long to wait before trying again an opening refused because another session is open.
BUSY_RETRY = 300.0


#: What turning closing off costs, said wherever it is offered as a way out.
NO_CLOSE_COST = ("Désactiver la clôture (close_session = false) laisserait chaque session ouverte dans Recyclic : "
                 "sa caisse et son opérateur y seraient bloqués pour toute ouverture, et le comptage de caisse "
                 "n'y arriverait pas.")
#: The reason written on each rejected outbox item (Recyclic keeps it; a blank one is refused).
OUTBOX_REASON = ("Déjà comptabilisé dans Paheko par la caisse Paheko (source {source}, session {session}) ; "
                 "rejeté par paheko-recyclic pour éviter une double écriture.")
OUTBOX_DELIVERED = ("Recyclic avait déjà envoyé à Paheko l'écriture de clôture de la session {session} (élément "
                    "{item} de sa file) : elle double probablement celle de la caisse Paheko. Vérifiez la "
                    "comptabilité de Paheko et supprimez le doublon.")


class RecyclicSink:
    """Delivers mapped sessions to one Recyclic instance (profile per session: ``mapped.profile``). One per
    process and source, shared by the worker threads: one client, one login."""

    kind = "recyclic"

    def __init__(self, config: RecyclicSinkConfig, *, ledger=None, client: RecyclicClient | None = None):
        self.config = config
        logins = None
        if ledger is not None:
            logins = LedgerLoginLog(ledger, f"recyclic.logins:{config.username}@{urlsplit(config.url).netloc}")
        self.client = client or RecyclicClient(config, logins=logins)

    def close(self) -> None:
        self.client.close()

    def map(self, snapshot, source) -> dict[str, Any]:
        return mapped_document(snapshot, source.mapping)

    def deliver(self, entry: Entry, log: ForwardLog) -> Delivery:
        try:
            return _Delivering(self, load_mapped(entry.mapped), log).run()
        except (RecyclicRateLimited, RecyclicUnavailable) as exc:
            kind = NotSent if exc.sent is False else RetryLater
            raise kind("Recyclic est injoignable ou surchargé pour l'instant ; nouvel essai programmé.", str(exc),
                       getattr(exc, "retry_after", None)) from None
        except RecyclicAuthError as exc:
            raise MustAct(
                f"Recyclic refuse l'utilisateur « {self.config.username} » du récepteur ({exc.status}) : vérifiez "
                "username et password dans la section [sink] de cette source, et que cet utilisateur a le rôle "
                "admin dans Recyclic, puis libérez la session.", str(exc)) from None
        except RecyclicRefused as exc:
            raise MustAct(
                f"Recyclic refuse la requête ({said(exc)}). Corrigez la cause (correspondances, données), puis "
                "libérez la session.", str(exc)) from None


def said(exc: RecyclicError) -> str:
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail, ensure_ascii=False)
    return f"{exc.status} {exc.code or ''} : {detail}".replace("  ", " ")


def _instant(text: str | None) -> datetime | None:
    """A Recyclic time (ISO, ``Z`` or an offset; naive is UTC), or ``None``."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _page(data: Any) -> list[dict[str, Any]]:
    """The sessions of one listing page: ``{"data": [...], "total", …}`` (v2) or a bare list."""
    rows = data.get("data") if isinstance(data, dict) else data
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def list_sessions(client: RecyclicClient, **filters: Any) -> list[dict[str, Any]]:
    """Every session matching ``filters`` (empty ones included), page by page (also ``report --verify``'s)."""
    rows: list[dict[str, Any]] = []
    params = {k: v for k, v in filters.items() if v is not None}
    for page in range(MAX_PAGES):
        data = client.get("cash-sessions/", {**params, "include_empty": "true", "skip": page * PAGE, "limit": PAGE})
        batch = [s for s in (load_remote(REMOTE_SESSION, r) for r in _page(data)) if s is not None]
        rows.extend(batch)
        total = data.get("total") if isinstance(data, dict) else None
        if len(batch) < PAGE or (isinstance(total, int) and len(rows) >= total):
            break
    return rows


class _Delivering:
    """One delivery attempt of one session."""

    def __init__(self, sink: RecyclicSink, mapped: MappedSession, forward_log: ForwardLog):
        self.sink, self.client, self.mapped, self.log = sink, sink.client, mapped, forward_log
        self.profile = PROFILES[mapped.profile]
        self.remote: dict[str, Any] | None = None  # the session as read back during this attempt

    def run(self) -> Delivery:
        mapped, log_ = self.mapped, self.log
        if mapped.opening is None or not mapped.sales:
            if log_.get("session", mapped.session_id) is None:
                log_.mark("session", mapped.session_id, "done",
                          detail="Aucune vente à transmettre : aucune session ouverte dans Recyclic.")
            return Delivery(RecyclicSink.kind, log_.done_id("session", mapped.session_id))
        for sale in mapped.sales:  # refuse before opening anything in Recyclic
            self.check_sale(sale)
        self.client.token()  # log in before anything is recorded: a failed login leaves nothing to settle
        session_id = log_.once("session", mapped.session_id, find=self.find_session, create=self.open_session)
        sales = self.post_sales(session_id)
        closed = mapped.close_session and mapped.closing is not None and self.close_session(session_id)
        return Delivery(RecyclicSink.kind, session_id, sales, bool(closed), tuple(log_.notes))

    # -- finding what Recyclic already holds ------------------------------------------------------------

    def list_sessions(self, **filters: Any) -> list[dict[str, Any]]:
        return list_sessions(self.client, **filters)

    def ours(self, remote: dict[str, Any]) -> str:
        """Whose a Recyclic session is, by its sales' notes: ``ours``, ``empty`` or ``other``."""
        sales = remote.get("sales") or []
        if not sales:
            return "empty"
        notes = [parse_sale_note(s.get("note")) for s in sales]
        key = (self.mapped.source, self.mapped.session_id)
        return "ours" if any(n is not None and n[:2] == key for n in notes) else "other"

    def find_session(self) -> str | None:
        """The Recyclic session already holding this Paheko session, or ``None`` (see the module doc).

        Sessions at the same site, register and second are told apart by the microseconds of their opening
        time (:func:`~receiver.sinks.recyclic.profiles.opening_marker`): one with this session's marker is
        ours, one with another marker another Paheko session's — never adopted nor closed, even while that
        one's opening is still in flight in another thread, or after the ledger was restored or deleted. One
        without a marker (opened by an older receiver) is judged by its owner and its sales' notes; empty, it
        is taken for ours only while no other session of this ledger has an unsettled opening at that second."""
        mapped, opening = self.mapped, self.mapped.opening
        if not self.profile.backdated_opening:
            return self.find_lost_legacy_opening()
        when = opening.opened_at
        second = when.replace(microsecond=0)
        marker = opening_marker(mapped.source, mapped.session_id)
        rows = self.list_sessions(site_id=opening.site_id, register_id=opening.register_id,
                                  date_from=(second - LISTING_WINDOW).astimezone(UTC).isoformat(),
                                  date_to=(second + LISTING_WINDOW).astimezone(UTC).isoformat())
        same = [(row, at.microsecond) for row in rows
                if (at := _instant(row.get("opened_at"))) is not None and at.replace(microsecond=0) == second
                and row.get("site_id") == opening.site_id and (row.get("register_id") or None) == opening.register_id]
        unmarked = [row["id"] for row, micro in same if micro == 0]
        owners = self.log.ledger.forward_owners("session", unmarked)
        contested = bool(unmarked) and self.opening_in_flight_elsewhere(second)
        candidates = []
        for row, micro in same:
            if micro not in (0, marker):
                continue  # another Paheko session's opening (its marker), whatever the ledger says
            owner = owners.get(row["id"])
            if micro == 0 and owner is not None and owner != self.log.entry.id:
                continue  # another Paheko session's (same place, same second: another source)
            detail = self.read_session(row["id"])
            kind = self.ours(detail)
            if kind == "empty" and micro == 0 and contested:
                continue  # maybe the opening another session is sending right now: not ours to take or close
            if kind != "other":
                candidates.append((kind, micro == marker, detail))
        if not candidates:
            return None
        mine = [d for kind, _, d in candidates if kind == "ours"]
        if len(mine) > 1:
            raise MustAct(
                f"Recyclic contient {len(mine)} sessions pour la session Paheko {mapped.session_id} "
                f"({', '.join(d['id'] for d in mine)}), chacune avec des tickets de cette session : rien n'est "
                "envoyé. Dans Recyclic, gardez-en une (supprimez les ventes en double de l'autre), puis libérez "
                "la session : les tickets absents seront envoyés, ceux déjà présents ne le seront pas.")
        empties = [d for kind, _, d in sorted(candidates, key=lambda c: not c[1]) if kind == "empty"]  # marked first
        chosen = mine[0] if mine else empties[0]
        self.remote = chosen
        if mine:
            self.log.note(f"Session Recyclic {chosen['id']} retrouvée avec {len(chosen['sales'])} ticket(s) de cette "
                          "session (le registre du récepteur l'ignorait : restauré, effacé ou en retard) : reprise, "
                          "rien n'est envoyé en double.")
        else:
            self.log.note(f"Session Recyclic {chosen['id']} déjà ouverte pour cette session (vide, ouverte le "
                          f"{second:%d/%m/%Y à %H:%M:%S}) : reprise, aucune autre n'est ouverte.")
        for _, _, detail in candidates:
            if detail is not chosen:
                self.close_orphan(detail)
        return chosen["id"]

    def opening_in_flight_elsewhere(self, second: datetime) -> bool:
        """Whether another Paheko session of this ledger has an opening left ``sending`` (in flight, or its
        answer lost) at this place and second: an unmarked empty session there may be that one's."""
        place = (self.mapped.opening.site_id, self.mapped.opening.register_id)
        for entry in self.log.ledger.unsettled("session"):
            if entry.id == self.log.entry.id or not entry.mapped:
                continue
            try:
                other = load_mapped(entry.mapped).opening
            except (ValidationError, TypeError, ValueError):
                continue  # another sink's document: not a Recyclic opening
            if other is not None and (other.site_id, other.register_id) == place \
                    and other.opened_at.replace(microsecond=0) == second:
                return True
        return False

    def find_lost_legacy_opening(self) -> str | None:
        """Recyclic 1.3: after a lost opening only, the empty open session of that register and operator
        (1.3 allows one per operator and register, so it can only be that opening)."""
        if not self.log.unsettled("session", self.mapped.session_id):
            return None
        opening = self.mapped.opening
        for row in self.list_sessions(status="open", site_id=opening.site_id, register_id=opening.register_id,
                                      operator_id=opening.operator_id):
            if self.log.ledger.forward_owner("session", row["id"]) is None and not (row.get("number_of_sales") or 0):
                detail = self.read_session(row["id"])
                if self.ours(detail) == "empty":
                    self.remote = detail
                    self.log.note(f"Ouverture précédente restée sans réponse : la session Recyclic {row['id']} "
                                  "(vide) est celle-là ; reprise, aucune autre n'est ouverte.")
                    return row["id"]
        return None

    def close_orphan(self, remote: dict[str, Any]) -> None:
        """Close (so Recyclic deletes) an empty session this Paheko session left in Recyclic, and say so."""
        session_id = remote["id"]
        if remote.get("status") != "open":
            return
        headers = {}
        if self.profile.name == "v2":
            try:
                headers["X-Step-Up-Pin"] = self.pin()
            except MustAct:
                self.log.note(f"Session Recyclic vide en trop {session_id} (une ouverture précédente restée sans "
                              "réponse) laissée ouverte : sans code PIN utilisable, le récepteur ne peut pas la "
                              "supprimer. Clôturez-la dans Recyclic : elle bloque toute ouverture en direct sur "
                              "cette caisse.")
                return
        try:
            answer = self._post_close(session_id, {
                "actual_cents": self.mapped.opening.initial_cents,
                "variance_comment": "Session vide en trop (ouverture restée sans réponse), fermée par le récepteur "
                                    "Paheko."}, headers)
        except RecyclicRefused as exc:
            self.log.note(f"Session Recyclic vide en trop {session_id} laissée ouverte : Recyclic refuse de la "
                          f"clôturer ({said(exc)}). Clôturez-la dans Recyclic : elle bloque toute ouverture en "
                          "direct sur cette caisse.")
            return
        deleted = isinstance(answer, dict) and answer.get("deleted") is True
        self.log.note(f"Session Recyclic vide en trop {session_id} (une ouverture précédente restée sans réponse) "
                      + ("supprimée." if deleted else "clôturée."))
        log.warning("orphan Recyclic session closed", extra={
            "event": "forward", "source": self.mapped.source, "session_id": self.mapped.session_id,
            "recyclic_session": session_id, "deleted": deleted})

    # -- opening ---------------------------------------------------------------------------------------

    def open_session(self) -> str:
        opening = self.mapped.opening
        if self.profile.backdated_opening:  # the opening's identity in Recyclic (see find_session)
            opening = replace(opening, opened_at=marked_opening_time(opening.opened_at, self.mapped.source,
                                                                     self.mapped.session_id))
        body = self.profile.open_body.dump(opening)
        try:
            answer = self.client.post("cash-sessions/", body)
        except RecyclicRefused as exc:
            if exc.status == 400 and ALREADY_OPEN.search(f"{exc.detail} {exc.message}"):
                self.already_open(exc)
            raise MustAct(
                f"Recyclic refuse d'ouvrir la session de caisse ({said(exc)}). Vérifiez le site, la caisse et "
                "l'opérateur de la correspondance, puis libérez la session.", str(exc)) from None
        session_id = self.created(answer, "session opening")
        self.remote = {"id": session_id, "status": "open", "sales": []}  # just opened: nothing to look for
        return session_id

    def already_open(self, exc: RecyclicRefused) -> None:
        """Another session is open for this operator or register (a live opening refused): say which, and
        retry later — it is either another Paheko session's, closed when that one is, or a person's."""
        opening = self.mapped.opening
        blocking = [r for r in self.list_sessions(status="open", site_id=opening.site_id)
                    if (opening.register_id and r.get("register_id") == opening.register_id)
                    or r.get("operator_id") == opening.operator_id]  # Recyclic ignores a register filter
        names = []
        for row in {r["id"]: r for r in blocking}.values():
            owner = self.log.ledger.forward_owner("session", row["id"])
            names.append(f"{row['id']} (session Paheko {owner.session_id} de la source {owner.source})" if owner
                         else f"{row['id']} (inconnue du récepteur)")
        which = ", ".join(names) or "introuvable"
        raise NotSent(
            f"Recyclic refuse d'ouvrir une session : une autre est ouverte sur cette caisse ou pour cet opérateur "
            f"({which}). Nouvel essai programmé ; si elle n'est pas au récepteur, clôturez-la dans Recyclic.",
            str(exc), BUSY_RETRY) from None

    def created(self, answer: Any, what: str) -> str:
        data = load_remote(CREATED, answer)
        if data is None:
            raise RetryLater("Réponse inattendue de Recyclic ; vérification au prochain essai.",
                             f"Recyclic answered the {what} without an id: outcome unknown, settled next time")
        return data["id"]

    # -- sales -----------------------------------------------------------------------------------------

    def post_sales(self, session_id: str) -> dict[int, str]:
        mapped, log_ = self.mapped, self.log
        pending = [s for s in mapped.sales if not log_.is_done("sale", s.tab_id)]
        found: dict[int, str] = {}
        if pending:
            remote = self.remote if self.remote is not None and self.remote["id"] == session_id \
                else self.read_session(session_id)
            self.remote = remote
            found = self.found_sales(remote, pending)
            missing = [s for s in pending if s.tab_id not in found]
            if remote["status"] != "open" and missing:
                raise MustAct(
                    f"La session Recyclic {session_id} n'est plus ouverte ({remote['status']}) alors que "
                    f"{len(missing)} ticket(s) restent à transmettre. Vérifiez-la dans Recyclic ; pour tout "
                    "renvoyer dans une nouvelle session, il faut une intervention technique.")
        self.compare_sent(session_id)
        return {sale.tab_id: log_.once("sale", sale.tab_id, key=sale.idempotency_key,
                                       find=lambda tab=sale.tab_id: found.get(tab),
                                       find_settles=self.profile.keeps_note,
                                       create=lambda s=sale: self.post_sale(session_id, s))
                for sale in mapped.sales}

    def compare_sent(self, session_id: str) -> None:
        """Tickets already in Recyclic whose amount differs from Paheko's now, or gone from Paheko: left as
        they are (never posted twice), and said ticket by ticket. Checked when the session was read back
        anyway, and after a change in Paheko was held and released (v2: tickets are named by their note)."""
        if not self.profile.keeps_note:
            return
        mapped = self.mapped
        if self.remote is None or self.remote["id"] != session_id:
            sent_before = any(self.log.is_done("sale", s.tab_id) for s in mapped.sales)
            if not (sent_before and any((h["reason"] or "").startswith(CHANGED_AFTER_SENDING)
                                        for h in self.log.ledger.history(self.log.entry.id))):
                return
            self.remote = self.read_session(session_id)
        by_tab = {s.tab_id: s for s in mapped.sales}
        for sale in self.remote.get("sales") or []:
            ids = parse_sale_note(sale.get("note"))
            if not ids or ids[:2] != (mapped.source, mapped.session_id):
                continue
            now = by_tab.get(ids[2])
            if now is None:
                self.log.note(f"Le ticket {ids[2]} est dans Recyclic (vente {sale['id']}) mais n'est plus transmis "
                              "depuis Paheko (supprimé ou écarté) : laissé tel quel ; supprimez-le dans Recyclic "
                              "s'il ne doit pas y être.")
            elif sale.get("total_amount") is not None and cents(sale["total_amount"]) != now.total_cents:
                self.log.note(f"Le ticket {ids[2]} vaut {euros(cents(sale['total_amount']))} dans Recyclic (vente "
                              f"{sale['id']}) et {euros(now.total_cents)} dans Paheko : laissé tel quel dans "
                              "Recyclic (jamais envoyé deux fois) ; corrigez-le à la main si besoin.")

    def found_sales(self, remote: dict[str, Any], pending: list[MappedSale]) -> dict[int, str]:
        """Tickets of ``pending`` already in the Recyclic session (v2: by note; 1.3: a lost answer, by content)."""
        if not self.profile.keeps_note:
            return self.match_legacy(remote, pending, {
                f.sink_id for (kind, _), f in self.log.records.items() if kind == "sale" and f.sink_id})
        wanted = {s.tab_id for s in pending}
        seen: dict[int, list[str]] = {}
        for sale in remote.get("sales") or []:
            ids = parse_sale_note(sale.get("note"))
            if ids and ids[:2] == (self.mapped.source, self.mapped.session_id) and ids[2] in wanted:
                seen.setdefault(ids[2], []).append(sale["id"])
        for tab, copies in seen.items():
            if len(copies) > 1:
                self.log.note(f"Le ticket {tab} est {len(copies)} fois dans la session Recyclic {remote['id']} "
                              f"(ventes {', '.join(copies)}) : supprimez les doublons dans Recyclic.")
        return {tab: copies[0] for tab, copies in seen.items()}

    def match_legacy(self, remote: dict[str, Any], pending: list[MappedSale], claimed: set[str]) -> dict[int, str]:
        """Recyclic 1.3 drops the note: a sale of the session that no ``done`` record claims can only be the
        one sale sent with a lost answer (sales are sent one at a time), if its content matches."""
        unclaimed = [s["id"] for s in remote["sales"] if s["id"] not in claimed]
        if not unclaimed:
            return {}
        sending = [s for s in pending if self.log.unsettled("sale", s.tab_id)]
        if len(unclaimed) == 1 and len(sending) == 1:
            remote_sale = self.client.get(f"sales/{unclaimed[0]}")
            if sale_shape(remote_sale) == sale_shape(self.sale_body("-", sending[0])):
                return {sending[0].tab_id: unclaimed[0]}
        raise MustAct(
            f"Impossible de savoir quelles ventes de la session Recyclic {remote['id']} correspondent aux tickets "
            f"dont l'envoi est resté sans réponse (Recyclic 1.3 ne garde pas la référence Paheko) : "
            f"{len(unclaimed)} vente(s) non rapprochée(s). Vérifiez la session dans Recyclic avant de libérer "
            "celle-ci : un ticket déjà présent serait envoyé une seconde fois.")

    def read_session(self, session_id: str) -> dict[str, Any]:
        try:
            data = self.client.get(f"cash-sessions/{session_id}")
        except RecyclicRefused as exc:
            if exc.status == 404:
                raise MustAct(
                    f"La session Recyclic {session_id}, ouverte pour cette session Paheko, n'existe plus dans "
                    "Recyclic (supprimée ?). Vérifiez dans Recyclic avant toute reprise.", str(exc)) from None
            raise
        remote = load_remote(REMOTE_SESSION, data)
        if remote is None:
            raise RetryLater("Réponse inattendue de Recyclic ; nouvel essai programmé.",
                             f"unexpected cash session read back from Recyclic: {str(data)[:200]}")
        remote["sales"] = remote.get("sales") or []
        return remote

    def check_sale(self, sale: MappedSale) -> None:
        """Hold what Recyclic would mishandle: a category over 50 characters crashes it (a 500, retried
        forever), a zero quantity has no unit price, 1.3 takes a single payment method per sale."""
        too_long = [i.category_id for i in sale.items if not 0 < len(i.category_id) <= CATEGORY_MAX]
        if too_long or any(i.quantity < 1 for i in sale.items):
            raise MustAct(
                f"Le ticket {sale.tab_id} ne peut pas être envoyé tel quel à Recyclic (catégorie vide ou de plus "
                f"de {CATEGORY_MAX} caractères, ou quantité nulle) : vérifiez les correspondances de catégories.",
                f"categories {too_long!r}")
        if self.mapped.profile == "legacy" and len(sale.payments) != 1:
            raise MustAct(
                f"Le ticket {sale.tab_id} a {len(sale.payments)} moyens de paiement : Recyclic 1.3 n'en accepte "
                "qu'un par vente. Revoyez la politique mixed_methods de la correspondance.")

    def sale_body(self, session_id: str, sale: MappedSale) -> dict[str, Any]:
        data = {"cash_session_id": session_id, "items": sale.items, "total_cents": sale.total_cents,
                "payments": sale.payments, "note": sale.note, "sale": sale}
        return self.profile.sale_body.dump(data)

    def post_sale(self, session_id: str, sale: MappedSale) -> str:
        body = self.sale_body(session_id, sale)
        try:
            answer = self.client.post("sales/", body, headers={"Idempotency-Key": sale.idempotency_key})
        except RecyclicRefused as exc:
            if exc.code == "IDEMPOTENCY_KEY_CONFLICT":
                raise MustAct(
                    f"Recyclic a déjà reçu le ticket {sale.tab_id} avec un contenu différent (même clé "
                    f"d'idempotence « {sale.idempotency_key} ») : la session a changé dans Paheko ou dans la "
                    "correspondance après un premier envoi. Vérifiez la vente dans Recyclic (note "
                    f"« {sale.note} »), supprimez-la si elle est fausse, puis libérez la session.",
                    str(exc)) from None
            raise MustAct(
                f"Recyclic refuse le ticket {sale.tab_id} ({said(exc)}). Corrigez la correspondance en cause, "
                "puis libérez la session.", str(exc)) from None
        return self.created(answer, f"sale of tab {sale.tab_id}")

    # -- closing ---------------------------------------------------------------------------------------

    def close_session(self, session_id: str) -> bool:
        mapped = self.mapped
        key = f"paheko-recyclic:{mapped.source}:{mapped.session_id}:close"

        def closed_already() -> str | None:
            remote = self.remote if self.remote is not None and self.remote["id"] == session_id \
                else self.read_session(session_id)
            return session_id if remote["status"] != "open" else None

        self.log.once("close", mapped.session_id, key=key, find=closed_already,
                      create=lambda: self.close_now(session_id, key))
        if mapped.profile == "v2":
            self.reject_outbox(session_id)
        return True

    # -- Recyclic's Paheko outbox: Paheko's caisse already booked the session ---------------------------

    def outbox_items(self, session_id: str) -> list[dict[str, Any]] | None:
        """The close items queued for this Recyclic session; None when this Recyclic has no outbox."""
        try:
            data = self.client.get("admin/paheko-outbox/items", {"cash_session_id": session_id, "limit": 100})
        except RecyclicRefused as exc:
            if exc.status in (404, 405):
                return None
            raise
        return [i for i in _page(data) if i.get("operation_type", "cash_session_close") == "cash_session_close"]

    def reject_outbox(self, session_id: str) -> None:
        """Reject, right after the close, the accounting item v2 queues for its own push to Paheko: pushed,
        it would book again what Paheko's caisse booked. Recorded once (forward kind ``outbox``): the items
        read by the lookup are the ones rejected (one listing per close)."""
        pending: list[dict[str, Any]] = []

        def settled() -> str | None:
            items = self.outbox_items(session_id)
            if items is None:
                return "-"
            if not items:
                return "-" if self.log.is_done("close", self.mapped.session_id) else None
            pending[:] = [i for i in items
                          if i.get("sync_state_core") != "rejete" and i.get("outbox_status") != "delivered"]
            delivered = [i for i in items if i.get("outbox_status") == "delivered"]
            if delivered:
                self.log.note(OUTBOX_DELIVERED.format(item=delivered[0].get("id"), session=session_id))
            return None if pending else ",".join(str(i.get("id")) for i in items)

        def reject() -> str:
            ids = []
            for item in pending:
                try:
                    self.client.post(f"admin/paheko-outbox/items/{item['id']}/reject", {"reason": OUTBOX_REASON.format(
                        source=self.mapped.source, session=self.mapped.session_id)})
                except RecyclicRefused as exc:
                    if exc.status != 409:
                        raise MustAct(
                            "La session est clôturée dans Recyclic, mais l'écriture comptable qu'il a mise en file "
                            f"pour Paheko (élément {item['id']}) n'a pas pu être rejetée ({said(exc)}). Rejetez-la "
                            "dans Recyclic (Administration › Paheko › file d'envoi), sinon elle doublerait dans "
                            "Paheko l'écriture de la caisse, puis libérez la session.", str(exc)) from None
                    self.log.note(OUTBOX_DELIVERED.format(item=item["id"], session=session_id))
                ids.append(str(item["id"]))
            return ",".join(ids) or "-"

        self.log.once("outbox", self.mapped.session_id, find=settled, create=reject)

    def close_now(self, session_id: str, key: str) -> str:
        mapped = self.mapped
        headers = {"Idempotency-Key": key}
        pin = self.pin() if mapped.profile == "v2" else None
        if pin is not None:
            headers["X-Step-Up-Pin"] = pin
        try:
            answer = self._post_close(session_id, mapped.closing, headers)
        except RecyclicRefused as exc:
            raise MustAct(self.close_refusal(exc), str(exc)) from None
        if isinstance(answer, dict) and answer.get("deleted") is True:
            self.log.note("Session vide supprimée par Recyclic à la clôture.")
        return session_id

    def _post_close(self, session_id: str, closing: Any, headers: dict[str, str]) -> Any:
        """``POST cash-sessions/{id}/close`` with ``closing`` (actual cents, variance comment). A PIN it
        refuses is remembered (so it is not tried again), one it accepts is no longer marked refused."""
        pin = headers.get("X-Step-Up-Pin")
        try:
            answer = self.client.post(f"cash-sessions/{session_id}/close", CLOSE_BODY.dump(closing), headers=headers)
        except RecyclicRefused as exc:
            if exc.code in PIN_CODES:
                self.remember_pin_refusal(pin or "", exc)
            raise
        if pin is not None:
            self.log.ledger.set_value(self.pin_key, "")
        return answer

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
                    "pour ce site ou cette caisse dans Recyclic. Un administrateur de Recyclic la crée (« mapping "
                    "check » du récepteur donne la requête), puis libérez la session. La session reste ouverte "
                    "dans Recyclic d'ici là, ce qui bloque sa caisse et son opérateur pour toute ouverture. "
                    + NO_CLOSE_COST)
        return (f"Recyclic refuse de clôturer la session ({said(exc)}). Les ventes sont transmises ; corrigez "
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
            raise MustAct(
                "La clôture des sessions est demandée mais aucun code PIN n'est configuré : Recyclic l'exige "
                "(X-Step-Up-Pin). Ajoutez pin dans la section [sink] de cette source, puis libérez la session. "
                + NO_CLOSE_COST)
        pin = config.pin.reveal()
        raw = self.log.ledger.get_value(self.pin_key)
        if raw:
            mark = json.loads(raw)
            refused_at = datetime.fromisoformat(mark["at"])
            released = any(change["from_state"] == "held" and change["at"] > refused_at
                           for change in self.log.ledger.history(self.log.entry.id))
            if mark["fingerprint"] == self.pin_fingerprint(pin) and not released:
                raise MustAct(
                    f"Recyclic a refusé ce code PIN le {refused_at:%d/%m/%Y à %H:%M} UTC ({mark['code']}) : la "
                    "clôture n'est pas tentée à nouveau avec lui (5 erreurs verrouillent le compte). Corrigez pin "
                    "dans la section [sink] de cette source, ou ce PIN dans Recyclic, puis libérez la session.")
        return pin

    def remember_pin_refusal(self, pin: str, exc: RecyclicRefused) -> None:
        self.log.ledger.set_value(self.pin_key, json.dumps({
            "fingerprint": self.pin_fingerprint(pin), "at": utcnow().isoformat(), "code": exc.code}))
