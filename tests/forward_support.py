"""Helpers for the forward tests: mapped sessions, a ledger entry, a served Recyclic stand-in, a request log."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from receiver.config import Secret
from receiver.dev.recyclic import (
    CATEGORIES, DEFAULT_USERS, MACHINE_USER, MAIN_SITE, REPLAY_REGISTER, ManualClock, create_recyclic_app,
)
from receiver.sinks.recyclic.config import RecyclicSinkConfig
from receiver.ledger import Entry, Ledger
from receiver.sinks import Delivery
from receiver.sinks.exactly import ForwardLog
from receiver.sinks.recyclic.mapping.mapper import idempotency_key, sale_note
from receiver.sinks.recyclic.mapping.model import (
    MappedClosing, MappedItem, MappedOpening, MappedPayment, MappedSale, MappedSession, Reconciliation, Tally,
    dump_mapped,
)

START = datetime(2026, 3, 14, 15, 0, tzinfo=UTC)
PARIS_WINTER = timezone(timedelta(hours=1))
CLOTHES = next(c.id for c in CATEGORIES if c.name == "Vêtements adultes")
BOOKS = next(c.id for c in CATEGORIES if c.name == "Livres")
OPERATOR = DEFAULT_USERS[1].id


def mapped_session(profile: str = "v2", *, session_id: int = 7, tabs: int = 3, close: bool = True,
                   source: str = "lab") -> MappedSession:
    """``tabs`` tickets of 18,50 € (a 3-piece line at 10,00 € → unit 3,33 €, 1 350 g; a book at 8,50 €);
    under v2 every other ticket is paid half by card."""
    sales = []
    for n in range(tabs):
        tab = 100 + n
        items = (MappedItem(10 * tab + 1, CLOTHES, 3, 1350, 1000, "Pulls"),
                 MappedItem(10 * tab + 2, BOOKS, 1, 0, 850, None))
        if profile == "v2" and n % 2:
            payments = (MappedPayment("cash", 1000, (tab,), (1000,)), MappedPayment("card", 850, (tab + 1,), (850,)))
        else:
            payments = (MappedPayment("cash", 1850, (tab,), (1850,)),)
        sales.append(MappedSale(tab, idempotency_key(source, session_id, tab), sale_note(source, session_id, tab),
                                items, 1850, payments))
    opening = MappedOpening(MAIN_SITE.id, REPLAY_REGISTER.id, OPERATOR, 5000,
                            (START - timedelta(hours=3)).astimezone(PARIS_WINTER))
    total = 1850 * tabs
    card = sum(p.amount_cents for s in sales for p in s.payments if p.code == "card")
    closing = MappedClosing(5000 + total - card, f"Paheko : écart 0,00 € ; carte {card / 100:.2f} €") if close else None
    return MappedSession(
        source=source, session_id=session_id, profile=profile, close_session=close, opening=opening,
        sales=tuple(sales), closing=closing, skipped=(),
        reconciliation=Reconciliation(Tally(tabs, tabs, 0), Tally(total, total, 0), Tally(1350 * tabs, 1350 * tabs, 0),
                                      (), True))


def new_ledger(tmp_path: Path) -> Ledger:
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.sqlite'}")
    ledger.migrate()
    return ledger


def new_entry(ledger: Ledger, session_id: int = 7, source: str = "lab") -> Entry:
    return ledger.record_notification(source, session_id, {}, origin="module").entry


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


class RequestLog:
    """WSGI wrapper that records every request (before any scripted fault)."""

    def __init__(self, app):
        self.app = app
        self.seen: list[Seen] = []

    def __call__(self, environ, start_response):
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        self.seen.append(Seen(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), headers))
        return self.app(environ, start_response)

    def count(self, method: str, suffix: str) -> int:
        return sum(1 for s in self.seen if s.method == method and s.path.endswith(suffix))


class Swappable:
    """One HTTP server per test module (stopping one costs ~0.5 s); each test plugs its own app in."""

    app: Any = None
    url: str = ""

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)


@dataclass
class Stand:
    """A stand-in app plugged into the module's server, with its clock and request log."""

    app: Any
    clock: ManualClock
    log: RequestLog
    url: str
    profile: str

    def config(self, **overrides) -> RecyclicSinkConfig:
        values: dict[str, Any] = dict(url=self.url + "/v1", username=MACHINE_USER.username,
                                      password=Secret(MACHINE_USER.password), pin=Secret(MACHINE_USER.pin))
        return RecyclicSinkConfig(**{**values, **overrides})

    def sales(self) -> list:
        """Sales the forwarder created (the stand-in's seeded shop activity left aside)."""
        return list(self.app.store.new_sales().values())

    def sessions(self) -> list:
        return list(self.app.store.new_sessions().values())


def plug(target: Swappable, profile: str, **kwargs) -> Stand:
    clock = ManualClock(START)
    app = create_recyclic_app(profile, clock=clock, **kwargs)
    log = RequestLog(app.wsgi_app)
    app.wsgi_app = log
    target.app = app
    return Stand(app, clock, log, target.url, profile)


def assert_exactly_once(stand: Stand, mapped: MappedSession, session_id: str) -> None:
    """Every mapped sale is in Recyclic once, in ``session_id``, with the right content; nothing else."""
    store = stand.app.store
    session = store.sessions[session_id]
    assert len(session.sale_ids) == len(mapped.sales)
    ours = [store.sales[i] for i in session.sale_ids]
    assert len([s for s in store.new_sales().values() if s.cash_session_id == session_id]) == len(mapped.sales)
    for sale, expected in zip(ours, mapped.sales):  # posted in tab order
        assert sale.total_amount == expected.total_cents
        assert [(line.category, line.quantity, line.weight_g, line.total_price) for line in sale.items] == [
            (i.category_id, i.quantity, i.weight_grams, i.total_cents) for i in expected.items]
        if mapped.profile == "v2":
            assert sale.note == expected.note
            assert sale.payments == [(p.code, p.amount_cents) for p in expected.payments]
        else:
            assert sale.payment_method == expected.payments[0].code
    if mapped.profile == "v2":
        notes = [s.note for s in store.new_sales().values() if s.note and s.note.startswith(
            f"Paheko {mapped.source} session {mapped.session_id} ")]
        assert sorted(notes) == sorted(s.note for s in mapped.sales)
    assert stand.app.contract_violations == []


def deliver(sink: Any, entry: Entry, mapped: MappedSession, ledger: Any) -> Delivery:
    """Deliver ``mapped`` as the worker does: as the entry's stored document, through a forward log on
    ``ledger`` (which may be a wrapper that crashes at a chosen step)."""
    document = replace(entry, mapped_json=json.dumps(dump_mapped(mapped)))
    return sink.deliver(document, ForwardLog(ledger, document))


def released(ledger: Ledger, entry: Entry) -> Entry:
    """What ``paheko-recyclic ledger release`` does to a held entry (after holding it, as the worker would)."""
    from receiver.ledger import State

    ledger.transition(entry.id, State.HELD, reason="test")
    return ledger.transition(entry.id, State.NOTIFIED, reason="Libérée par un opérateur.", snapshot=None, mapped=None)

