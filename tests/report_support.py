"""A busy shop's till, generated: snapshots mapped by the real mapper and written to a real ledger, for the
report's tests and ``bench/report.py``. Deterministic for a given seed."""

from __future__ import annotations

import json
import random
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from receiver.ledger import Ledger, State
from receiver.ledger import tables as t
from receiver.ledger.store import utcnow
from receiver.sinks.recyclic.mapping.config import MappingSchema
from receiver.sinks.recyclic.mapping.mapper import MappingHeld, map_session
from receiver.sinks.recyclic.mapping.model import dump_mapped
from receiver.reread.snapshot import (
    METHOD_CASH, METHOD_TRACKED, PRICING_PER_KG, PRICING_QTY, Balance, Category, Item, Location, Method, Payment,
    SessionSnapshot, Tab, Totals, dump_snapshot,
)
from receiver.reread.snapshot import _with_computed as with_computed

PARIS = ZoneInfo("Europe/Paris")
#: Paheko category → (grams per unit or None, price range in cents, per kg?)
SHOP = {
    "Vêtements": (250, (100, 800), False),
    "Vêtements au kilo": (1000, (300, 800), True),
    "Livres": (300, (50, 400), False),
    "Vaisselle": (400, (20, 300), False),
    "Petit électroménager": (2500, (500, 3000), False),
    "Meubles": (15000, (1000, 8000), False),
    "Jouets": (500, (100, 1500), False),
    "Divers": (None, (50, 500), False),
    "Adhésion": (None, (1000, 1000), False),
}
METHODS = {1: Method(1, "Espèces", METHOD_CASH, "530", None), 2: Method(2, "CB", METHOD_TRACKED, "5115", None),
           3: Method(3, "Chèque", METHOD_TRACKED, "5112", None)}
MAPPING = MappingSchema().load({
    "profile": "v2", "close_session": True,
    "default_operator": "00000000-0000-4000-8000-000000000001",
    "locations": {"Boutique": {"site": "00000000-0000-4000-8000-000000000002"}},
    "categories": {name: (f"00000000-0000-4000-8000-{n:012d}" if name != "Adhésion" else "membership")
                   for n, name in enumerate(SHOP, start=10)},
    "methods": {"Espèces": "cash", "CB": "card", "Chèque": "check"},
    "policies": {"refunds": "skip", "membership": "skip"},
})


def shop_session(rng: random.Random, session_id: int, day: date, tickets: int, ids: list[int]) -> SessionSnapshot:
    """One day's session: ``tickets`` tabs of 1–5 lines, an occasional refund line and membership."""
    opened = datetime(day.year, day.month, day.day, 10, 0, tzinfo=PARIS)
    tabs = []
    names = list(SHOP)
    for n in range(tickets):
        when = opened + timedelta(minutes=n * 5)
        items = []
        for _ in range(rng.randint(1, 5)):
            ids[0] += 1
            name = rng.choice(names[:-1]) if rng.random() > 0.01 else "Adhésion"
            grams, (low, high), per_kg = SHOP[name]
            refund = rng.random() < 0.01
            qty = 1 if per_kg else rng.randint(1, 3)
            weight = rng.randint(300, 4000) if per_kg else grams
            price = rng.randint(low, high)
            total = price * weight // 1000 if per_kg else qty * price
            if refund:
                qty, total = -qty, -total
            items.append(Item(ids[0], when, None, None, qty, price, total, weight, f"article {ids[0]}", name, None,
                              None, 0, PRICING_PER_KG if per_kg else PRICING_QTY, None, None, None, None))
        amount = sum(i.total for i in items)
        payments = []
        if amount:
            ids[1] += 1
            method = 1 if amount < 0 else rng.choice((1, 1, 2, 3))
            payments.append(Payment(ids[1], method, when, amount, None, None, METHODS[method].type))
        tabs.append(Tab(session_id * 1000 + n, None, None, when, when, items, payments))
    total = sum(i.total for tab in tabs for i in tab.items)
    cash = 5000 + sum(p.amount for tab in tabs for p in tab.payments if p.method_id == 1)
    read = SessionSnapshot(
        source="shop", session_id=session_id, caisse_version="0.8.12", layout="0.8.12+", timezone="Europe/Paris",
        opened=opened, closed=opened + timedelta(hours=8), open_user="Alice", close_user="Alice",
        location=Location(1, "Boutique"), result=total, nb_tabs=len(tabs),
        balances=[Balance(1, "Espèces", 5000, cash, 0, 0)], tabs=tabs, methods=METHODS,
        categories={n: Category(n, name, None) for n, name in enumerate(SHOP, start=1)},
        totals=Totals(0, 0, {}, 0), checks=[])
    return with_computed(read, has_result=True, has_nb_tabs=True)  # totals and checks as a re-read makes them


def fill_ledger(ledger: Ledger, days: list[date], tickets_per_day: int, *, seed: int = 1,
                unfinished: dict[int, str] | None = None, source: str = "shop") -> dict[int, SessionSnapshot]:
    """One forwarded session per day (session ids from 1) in ``ledger``, for ``source``. ``unfinished``
    maps a session id to the state it stops in (``held`` before mapping, ``mapped`` with half its sales sent,
    ``notified``)."""
    rng = random.Random(seed)
    ids = [0, 0]
    unfinished = unfinished or {}
    snapshots = {}
    forwards = []
    for number, day in enumerate(days, start=1):
        snapshot = shop_session(rng, number, day, tickets_per_day, ids)
        snapshots[number] = snapshot
        entry = ledger.record_notification(source, number, {"closed": f"{day} 18:00:00"}, origin="module").entry
        stop = unfinished.get(number)
        if stop == "notified":
            continue
        entry = ledger.transition(entry.id, State.SNAPSHOT, snapshot=dump_snapshot(snapshot))
        if stop == "held":
            ledger.transition(entry.id, State.HELD, reason="Catégorie Paheko non reliée (exemple).")
            continue
        try:
            mapped = map_session(snapshot, MAPPING)
        except MappingHeld as held:  # pragma: no cover - the generator only makes mappable sessions
            raise AssertionError(held.reasons) from None
        ledger.transition(entry.id, State.MAPPED, mapped=dump_mapped(mapped))
        now = utcnow()
        sales = mapped.sales if stop != "mapped" else mapped.sales[: len(mapped.sales) // 2]
        forwards.append(dict(entry_id=entry.id, kind="session", paheko_id=number, status="done",
                             sink_id=f"rs-{number}", idempotency_key=None, detail=None, updated_at=now))
        forwards += [dict(entry_id=entry.id, kind="sale", paheko_id=sale.tab_id, status="done",
                          sink_id=f"sale-{sale.tab_id}", idempotency_key=sale.idempotency_key, detail=None,
                          updated_at=now) for sale in sales]
        if stop != "mapped":
            forwards.append(dict(entry_id=entry.id, kind="close", paheko_id=number, status="done",
                                 sink_id=f"rs-{number}", idempotency_key=None, detail=None, updated_at=now))
            ledger.transition(entry.id, State.FORWARDED)
    with ledger.transaction() as conn:
        if forwards:
            conn.execute(t.forwards.insert(), forwards)
    return snapshots


def year_days(year: int, sessions: int) -> list[date]:
    """``sessions`` opening days spread over ``year`` (a shop open ~6 days a week)."""
    first = date(year, 1, 1)
    open_days = [first + timedelta(days=n) for n in range(365) if (first + timedelta(days=n)).weekday() != 0]
    step = len(open_days) / sessions
    return [open_days[int(i * step)] for i in range(sessions)]


def as_json(value) -> dict:
    return json.loads(json.dumps(value))
