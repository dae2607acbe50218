"""Session snapshots read through the local Paheko stand-in over HTTP.

The fixture expectations are written from /work/shared/fixtures/README.md (the oracle), not from our output.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from receiver.reread.snapshot import (
    CaisseUnavailable,
    SessionNotFound,
    SessionOpen,
    SessionUnreadable,
    dump_snapshot,
    load_snapshot,
    read_session,
)
from tests.paheko_db import CASH, DEBT, PRICING_PER_KG, WALLET, PahekoDB, big_session, reference_data, served

FIXTURE = Path(__file__).parent / "fixtures" / "paheko-caisse.sqlite"
PARIS = ZoneInfo("Europe/Paris")
CET = timezone(timedelta(hours=1))


def at(clock: str) -> datetime:
    """A local time on the fixture's day (24 Nov 2026, CET = UTC+1)."""
    return datetime.fromisoformat(f"2026-11-24 {clock}").replace(tzinfo=CET)


@pytest.fixture(scope="module")
def fixture_snapshots():
    with served(FIXTURE) as (client, app):
        before = app.stats.requests
        first = read_session(client, 1, PARIS)
        requests_for_one = app.stats.requests - before
        second = read_session(client, 2, PARIS)
    return first, second, requests_for_one


def lines(tab):
    return [(i.name, i.qty, i.price, i.total, i.weight) for i in tab.items]


def pays(tab, methods):
    return [(methods[p.method_id].name, p.amount, p.reference) for p in tab.payments]


def test_session_1_matches_the_oracle(fixture_snapshots):
    s, _, requests = fixture_snapshots
    assert requests <= 3
    assert (s.session_id, s.caisse_version, s.layout) == (1, "0.8.12", "0.8.12+")
    assert s.opened == at("01:18:21") and s.closed == at("01:18:22")
    assert s.opened.utcoffset() == timedelta(hours=1)
    assert (s.open_user, s.close_user) == ("Alice (bénévole)", "Bob (bénévole)")
    assert (s.location.id, s.location.name) == (1, "Boutique principale")
    assert (s.result, s.nb_tabs) == (12450, 5)
    assert [(b.method_name, b.open_amount, b.close_amount, b.error_amount) for b in s.balances] == [
        ("Espèces", 5000, 6930, -20),
        ("Monnaie locale", 2000, 3000, 0),
    ]
    # Espèces: 5000 + 1100 + 700 - 300 + 450 = 6950 expected, 6930 counted: -20.
    assert [b.expected_close for b in s.balances] == [6950, 3000]
    tabs = {t.id: t for t in s.tabs}
    assert [t.id for t in s.tabs] == [1, 2, 3, 4, 5]
    assert [t.name for t in s.tabs] == ["Mme Martin", "M. Dupont", "Famille Leroy", None, "Paul"]
    assert lines(tabs[1]) == [("T-shirt", 3, 300, 900, 200), ("Livre de poche", 2, 100, 200, 150)]
    assert pays(tabs[1], s.methods) == [("Espèces", 1100, None)]
    per_kg, chair = tabs[2].items
    assert (per_kg.pricing, per_kg.price, per_kg.weight, per_kg.total) == (1, 800, 1250, 1000)
    assert (chair.name, chair.total, chair.weight) == ("Chaise", 1200, 4000)
    assert pays(tabs[2], s.methods) == [("CB", 1500, "TPE-0001"), ("Espèces", 700, None)]
    assert lines(tabs[3]) == [("Lave-linge", 1, 8000, 8000, 62000)]
    assert pays(tabs[3], s.methods) == [("Chèque", 8000, "CHQ 1234567")]
    (refund,) = tabs[4].items
    assert (refund.total, refund.weight) == (-300, None)
    assert refund.name.startswith("Retour article")
    assert pays(tabs[4], s.methods) == [("Espèces", -300, None)]
    assert lines(tabs[5]) == [("Grille-pain", 1, 1000, 1000, 1500), ("Beau livre", 1, 450, 450, 1200)]
    assert pays(tabs[5], s.methods) == [("Monnaie locale", 1000, None), ("Espèces", 450, None)]
    assert s.totals.items_total == 12450
    assert s.totals.nb_tabs == 5
    assert s.totals.payments_by_method == {1: 1950, 2: 8000, 4: 1500, 5: 1000}
    assert s.totals.weight_grams == 3 * 200 + 2 * 150 + 1250 + 4000 + 62000 + 1500 + 1200
    # Balance error -20 is what Paheko stored and what we recompute: consistent, not hidden.
    assert s.consistent and {c.name for c in s.checks} >= {"result", "nb_tabs"}
    assert {m.id: (m.name, m.type, m.account) for m in s.methods.values()} == {
        1: ("Espèces", 1, "530"), 2: ("Chèque", 0, "5112"), 4: ("CB", 0, "5115"), 5: ("Monnaie locale", 1, "5300")
    }
    assert {c.id: (c.name, c.account) for c in s.categories.values()} == {
        5: ("Vêtements", "7071"), 6: ("Livres", "7072"), 7: ("Électroménager", "7073"), 8: ("Mobilier", "7074")
    }


def test_session_2_matches_the_oracle(fixture_snapshots):
    _, s, _ = fixture_snapshots
    assert s.opened == at("01:18:27") and s.closed == at("01:18:28")
    assert (s.result, s.nb_tabs) == (7290, 5)
    assert [(b.method_name, b.open_amount, b.close_amount, b.error_amount, b.expected_close) for b in s.balances] == [
        ("Espèces", 6930, 8820, 0, 8820),
        ("Monnaie locale", 3000, 3000, 0, 3000),
    ]
    tabs = {t.id: t for t in s.tabs}
    assert [t.id for t in s.tabs] == [6, 7, 8, 9, 10]
    assert [t.name for t in s.tabs] == ["Claire", None, "Lucas", "Mme Martin", "Inès"]
    assert lines(tabs[6]) == [("Table", 1, 3500, 3500, 18500), ("Pantalon", 2, 500, 1000, 500)]
    assert pays(tabs[6], s.methods) == [("CB", 4500, "TPE-0002")]
    assert [(i.pricing, i.price, i.weight, i.total) for i in tabs[7].items] == [(1, 800, 800, 640), (0, 300, 200, 300)]
    assert pays(tabs[7], s.methods) == [("Espèces", 940, None)]
    assert lines(tabs[8]) == [("Livre de poche", 5, 100, 500, 150)]
    assert [(i.name.split(" ")[0], i.total) for i in tabs[9].items] == [("Chaise", 1200), ("Retour", -300)]
    assert pays(tabs[9], s.methods) == [("Chèque", 900, "CHQ 7654321")]
    assert lines(tabs[10]) == [("Beau livre", 1, 450, 450, 1200)]
    assert s.totals.items_total == 7290 and s.totals.nb_tabs == 5
    assert s.totals.payments_by_method == {1: 940 + 500 + 450, 2: 900, 4: 4500}
    assert s.totals.weight_grams == 18500 + 2 * 500 + 800 + 200 + 5 * 150 + 4000 + 1200
    assert s.consistent and all(c.ok for c in s.checks)


def test_snapshot_round_trips_through_json(fixture_snapshots):
    s = fixture_snapshots[0]
    text = json.dumps(dump_snapshot(s))
    assert '"opened": "2026-11-24T01:18:21+01:00"' in text
    back = load_snapshot(json.loads(text))
    assert back == s
    assert json.dumps(dump_snapshot(back)) == text


def test_open_unknown_and_deleted_sessions(tmp_path):
    db = PahekoDB(tmp_path / "p.sqlite")
    ids = reference_data(db)
    done = db.open_session("2026-12-01 09:00:00", cash={ids["cash"]: 0})
    db.close_session(done, "2026-12-01 18:00:00", {ids["cash"]: 0})
    still_open = db.open_session("2026-12-02 09:00:00", cash={ids["cash"]: 1000})
    db.con.execute("DELETE FROM plugin_pos_sessions WHERE id = ?", (done,))
    with served(db.path) as (client, _):
        with pytest.raises(SessionOpen) as opened:
            read_session(client, still_open, PARIS)
        assert opened.value.opened == datetime(2026, 12, 2, 9, tzinfo=CET)
        with pytest.raises(SessionNotFound) as deleted:
            read_session(client, done, PARIS)
        assert deleted.value.max_id == still_open and "deleted" in str(deleted.value)
        with pytest.raises(SessionNotFound):
            read_session(client, 99, PARIS)


def test_missing_caisse_plugin_is_a_clear_error(tmp_path):
    path = tmp_path / "empty.sqlite"
    sqlite3.connect(path).executescript("CREATE TABLE plugins (id INTEGER PRIMARY KEY, name TEXT, version TEXT);")
    with served(path) as (client, _):
        with pytest.raises(CaisseUnavailable, match="caisse"):
            read_session(client, 1, PARIS)


def test_legacy_layout_reads_the_single_drawer(tmp_path):
    db = PahekoDB(tmp_path / "old.sqlite", layout="legacy", version="0.8.7")
    ids = reference_data(db)
    s_id = db.open_session("2026-03-02 09:00:00", location=ids["shop"], cash=5000)
    tab = db.tab(s_id, "2026-03-02 10:00:00", "Mme A")
    db.item(tab, "2026-03-02 10:00:00", "T-shirt", "Vêtements", price=300, qty=2, weight=200, product=ids["tshirt"])
    db.payment(tab, ids["cash"], 400, "2026-03-02 10:01:00")
    db.payment(tab, ids["card"], 200, "2026-03-02 10:01:00", reference="TPE-9")
    db.close_session(s_id, "2026-03-02 18:00:00", 5390)
    with served(db.path) as (client, app):
        before = app.stats.requests
        s = read_session(client, s_id, PARIS)
        assert app.stats.requests - before <= 3
    assert (s.layout, s.caisse_version, s.result, s.nb_tabs) == ("legacy", "0.8.7", None, None)
    (drawer,) = s.balances
    # 5000 opening + 400 cash = 5400 expected; 5390 counted: -10.
    assert (drawer.method_id, drawer.open_amount, drawer.close_amount, drawer.expected_close) == (None, 5000, 5390, 5400)
    assert drawer.error_amount == -10
    assert [p.type for p in s.payments()] == [None, None]
    assert [i.id_method for i in s.items()] == [None]
    assert [c.name for c in s.checks] == ["error_amount[drawer]"] and s.consistent
    assert s.totals.items_total == 600 and s.location.name == "Boutique"


def test_varied_session(tmp_path):
    """Refunds, per-kg, debt and wallet payments, a second location, a deleted product, a DST date."""
    db = PahekoDB(tmp_path / "v.sqlite")
    ids = reference_data(db)
    s_id = db.open_session("2026-07-14 09:00:00", location=ids["annex"], cash={ids["annex_cash"]: 1000})
    t1 = db.tab(s_id, "2026-07-14 10:00:00", "Vrac", user_id=7)
    db.item(t1, "2026-07-14 10:00:00", "Vrac au kilo", "Vêtements", price=800, qty=1, weight=1333,
            pricing=PRICING_PER_KG, product=ids["bulk"])  # 800 × 1.333 = 1066.4 → 1066
    db.item(t1, "2026-07-14 10:00:00", "Livre", "Livres", price=100, qty=-1, weight=150, product=ids["book"])
    db.payment(t1, ids["annex_cash"], 1000, "2026-07-14 10:05:00")
    db.payment(t1, ids["debt"], -34, "2026-07-14 10:05:00")
    t2 = db.tab(s_id, "2026-07-14 11:00:00")
    db.item(t2, "2026-07-14 11:00:00", "Rechargement porte-monnaie", "Porte-monnaie", price=2000, type=2,
            id_method=ids["wallet"])
    db.item(t2, "2026-07-14 11:00:00", "T-shirt", "Vêtements", price=300, weight=200, product=ids["tshirt"])
    db.payment(t2, ids["annex_cash"], 2300, "2026-07-14 11:05:00")
    t3 = db.tab(s_id, "2026-07-14 12:00:00", "Paul")
    db.item(t3, "2026-07-14 12:00:00", "Règlement ardoise", "Ardoise", price=500, type=1, id_method=ids["debt"])
    db.payment(t3, ids["wallet"], 500, "2026-07-14 12:05:00")
    db.delete_product(ids["tshirt"])
    db.close_session(s_id, "2026-07-14 19:00:00", {ids["annex_cash"]: 4300})
    with served(db.path) as (client, _):
        s = read_session(client, s_id, PARIS)
    assert s.opened == datetime(2026, 7, 14, 9, tzinfo=timezone(timedelta(hours=2)))
    assert s.location.name == "Annexe"
    items = s.items()
    assert [i.total for i in items] == [1066, -100, 2000, 300, 500]
    assert s.totals.items_total == 3766 == s.result
    assert s.totals.weight_grams == 1333 - 150 + 200
    wallet_topup, tshirt = s.tabs[1].items
    assert (wallet_topup.type, wallet_topup.id_method, wallet_topup.weight) == (2, ids["wallet"], None)
    assert (tshirt.product_id, tshirt.category_id, tshirt.name) == (None, None, "T-shirt")
    assert s.tabs[0].user_id == 7 and s.tabs[1].name is None
    assert s.totals.payments_by_method == {ids["annex_cash"]: 3300, ids["debt"]: -34, ids["wallet"]: 500}
    assert {m: s.methods[m].type for m in s.methods} == {ids["annex_cash"]: CASH, ids["debt"]: DEBT, ids["wallet"]: WALLET}
    assert [(b.method_id, b.expected_close, b.error_amount) for b in s.balances] == [(ids["annex_cash"], 4300, 0)]
    assert set(s.categories) == {ids["clothes"], ids["books"]}
    assert s.consistent


def test_stored_mismatches_are_recorded_not_hidden(tmp_path):
    db = PahekoDB(tmp_path / "m.sqlite")
    ids = reference_data(db)
    s_id = db.open_session("2026-12-01 09:00:00", cash={ids["cash"]: 0})
    tab = db.tab(s_id, "2026-12-01 10:00:00")
    db.item(tab, "2026-12-01 10:00:00", "Livre", "Livres", price=100, qty=3)
    db.payment(tab, ids["cash"], 300, "2026-12-01 10:00:00")
    db.close_session(s_id, "2026-12-01 18:00:00", {ids["cash"]: 300}, result=250, nb_tabs=2)
    db.con.execute("UPDATE plugin_pos_sessions_balances SET error_amount = 5")
    with served(db.path) as (client, _):
        s = read_session(client, s_id, PARIS)
    assert not s.consistent
    assert {c.name: (c.stored, c.computed, c.ok) for c in s.checks} == {
        "result": (250, 300, False),
        "nb_tabs": (2, 1, False),
        f"error_amount[method {ids['cash']}]": (5, 0, False),
    }


def test_five_thousand_items_in_few_requests_and_in_pages(tmp_path):
    db = PahekoDB(tmp_path / "big.sqlite")
    ids = reference_data(db)
    s_id = big_session(db, ids, 5000, per_tab=10)
    with served(db.path) as (client, app):
        before = app.stats.requests
        whole = read_session(client, s_id, PARIS)
        assert app.stats.requests - before <= 3
        before = app.stats.requests
        paged = read_session(client, s_id, PARIS, page_size=700)
        assert app.stats.requests - before == 1 + 8  # probe, then ceil(5000 / 700) pages of items
    for s in (whole, paged):
        assert len(s.items()) == 5000 and len(s.tabs) == 500 and len(s.payments()) == 500
        assert s.totals.items_total == 1_500_000 and s.totals.weight_grams == 1_000_000
        assert [i.id for i in s.items()] == sorted(i.id for i in s.items())
        assert s.consistent
    assert paged == whole


def test_non_utf8_text_gives_a_typed_error_naming_the_session(tmp_path):
    db = PahekoDB(tmp_path / "latin1.sqlite")
    ids = reference_data(db)
    s_id = db.open_session("2026-12-01 09:00:00", cash={ids["cash"]: 0})
    tab = db.tab(s_id, "2026-12-01 10:00:00")
    db.item(tab, "2026-12-01 10:00:00", "Livre", "Livres", price=100)
    db.payment(tab, ids["cash"], 100, "2026-12-01 10:00:00")
    db.close_session(s_id, "2026-12-01 18:00:00", {ids["cash"]: 100})
    # "Réparé" in Latin-1: bytes that are not UTF-8, stored as TEXT (as a careless import would).
    db.con.execute("UPDATE plugin_pos_tabs SET name = CAST(X'52e97061' AS TEXT) WHERE id = ?", (tab,))
    with served(db.path, retries=2) as (client, app):
        with pytest.raises(SessionUnreadable) as error:
            read_session(client, s_id, PARIS)
    assert f"session {s_id}" in str(error.value) and "UTF-8" in str(error.value)
    assert error.value.cause.attempts == 3
