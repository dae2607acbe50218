"""map_session on real snapshots: the fixture (expectations from /work/shared/fixtures/README.md) and
databases built with tests/paheko_db.py, read through the local Paheko stand-in."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from receiver.sinks.recyclic.mapping.config import MappingSchema
from receiver.sinks.recyclic.mapping.mapper import MappingHeld, idempotency_key, map_session, parse_sale_note, sale_note
from receiver.sinks.recyclic.mapping.model import dump_mapped, load_mapped
from receiver.reread.snapshot import read_session
from tests.paheko_db import CASH, PRICING_PER_KG, TRACKED, PahekoDB, reference_data, served

FIXTURE = Path(__file__).parent / "fixtures" / "paheko-caisse.sqlite"
PARIS = ZoneInfo("Europe/Paris")
CET = timezone(timedelta(hours=1))


def uid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


SITE, REGISTER, OPERATOR, DEFAULT_OPERATOR = uid(1), uid(2), uid(3), uid(4)
CATEGORIES = {"Vêtements": uid(10), "Livres": uid(11), "Électroménager": uid(12), "Mobilier": uid(13)}
CLOTHES, BOOKS, APPLIANCES, FURNITURE = CATEGORIES.values()
METHODS = {"Espèces": "cash", "Monnaie locale": "monnaie_locale", "CB": "card", "Chèque": "check"}


def mapping(**changes):
    document = {
        "default_operator": DEFAULT_OPERATOR,
        "operators": {"Alice (bénévole)": OPERATOR},
        "locations": {"Boutique principale": {"site": SITE, "register": REGISTER}},
        "categories": dict(CATEGORIES),
        "methods": dict(METHODS),
    }
    policies = changes.pop("policies", {})
    document.update(changes)
    document["policies"] = policies
    return MappingSchema().load({k: v for k, v in document.items() if v is not None})


def read(db_path, *session_ids):
    with served(db_path) as (client, _app):
        return [read_session(client, session_id, PARIS) for session_id in session_ids]


@pytest.fixture(scope="module")
def fixture_sessions():
    return read(FIXTURE, 1, 2)


def items(sale):
    return [(i.paheko_item_id, i.category_id, i.quantity, i.weight_grams, i.total_cents, i.notes) for i in sale.items]


def payments(sale):
    return [(p.code, p.amount_cents, p.paheko_payment_ids, p.paheko_amounts_cents) for p in sale.payments]


def parts(mapped):
    return [(p.kind, p.tab_id, p.item_id, p.payment_id, p.amount_cents, p.weight_grams) for p in mapped.skipped]


def parts_of(mapped, tab_id):
    return [p for p in mapped.skipped if p.tab_id == tab_id]


def held(snapshot, m) -> list[str]:
    with pytest.raises(MappingHeld) as info:
        map_session(snapshot, m)
    return info.value.reasons


# --- the fixture ------------------------------------------------------------------------------------------


def test_fixture_session_1_with_refunds_skipped(fixture_sessions):
    s1, _ = fixture_sessions
    m = map_session(s1, mapping(close_session=True))
    assert (m.source, m.session_id, m.profile, m.close_session) == ("lab", 1, "v2", True)
    assert m.opening.site_id == SITE and m.opening.register_id == REGISTER and m.opening.operator_id == OPERATOR
    assert m.opening.opened_at == datetime(2026, 11, 24, 1, 18, 21, tzinfo=CET)
    assert m.opening.initial_cents == 5000  # euro cash only: the local currency's 20,00 € float is not euros
    sales = {s.tab_id: s for s in m.sales}
    assert list(sales) == [1, 2, 3, 5]
    assert items(sales[1]) == [(1, CLOTHES, 3, 600, 900, "T-shirt"), (2, BOOKS, 2, 300, 200, "Livre de poche")]
    assert payments(sales[1]) == [("cash", 1100, (1,), (1100,))]
    per_kg, chair = sales[2].items
    assert (per_kg.quantity, per_kg.weight_grams, per_kg.total_cents, per_kg.category_id) == (1, 1250, 1000, CLOTHES)
    assert (chair.notes, chair.weight_grams, chair.total_cents, chair.category_id) == ("Chaise", 4000, 1200, FURNITURE)
    assert [(p.code, p.amount_cents) for p in sales[2].payments] == [("card", 1500), ("cash", 700)]
    assert items(sales[3]) == [(5, APPLIANCES, 1, 62000, 8000, "Lave-linge")]
    assert payments(sales[3]) == [("check", 8000, (4,), (8000,))]
    # Espèces and Monnaie locale stay apart: 10,00 in local currency, 4,50 € in cash.
    assert [(p.code, p.amount_cents) for p in sales[5].payments] == [("monnaie_locale", 1000), ("cash", 450)]
    assert [s.total_cents for s in m.sales] == [1100, 2200, 8000, 1450]
    for sale in m.sales:
        assert sale.note == f"Paheko lab session 1 ticket {sale.tab_id}"
        assert parse_sale_note(sale.note) == ("lab", 1, sale.tab_id)
        assert sale.idempotency_key == idempotency_key("lab", 1, sale.tab_id)
    # Tab 4: the refund line and the refund payment, both recorded.
    assert [(p.kind, p.tab_id, p.amount_cents, p.item_id is None) for p in m.skipped] == [
        ("refunds", 4, -300, False), ("refunds", 4, -300, True)]
    r = m.reconciliation
    assert r.balanced
    assert (r.tabs.paheko, r.tabs.forwarded, r.tabs.skipped) == (5, 4, 1)
    assert (r.items_cents.paheko, r.items_cents.forwarded, r.items_cents.skipped) == (12450, 12750, -300)
    weight = 600 + 300 + 1250 + 4000 + 62000 + 1500 + 1200
    assert (r.weight_grams.paheko, r.weight_grams.forwarded, r.weight_grams.skipped) == (weight, weight, 0)
    assert {t.method_name: (t.paheko, t.forwarded, t.skipped) for t in r.payments} == {
        "Espèces": (1950, 2250, -300), "Chèque": (8000, 8000, 0), "CB": (1500, 1500, 0), "Monnaie locale": (1000, 1000, 0)}
    # Closing: the euro drawer counted; the comment quotes Paheko's figures for both.
    assert m.closing.actual_cents == 6930
    comment = m.closing.variance_comment
    for figure in ("124,50 €", "5 tickets", "Espèces ouverture 50,00 €, clôture 69,30 €, écart -0,20 €",
                   "Monnaie locale ouverture 20,00 €, clôture 30,00 €, écart 0,00 €", "CB 15,00 €",
                   "Chèque 80,00 €", "Hors espèces transmis : 105,00 € (card 15,00 €, check 80,00 €, monnaie_locale 10,00 €)", "Bob (bénévole)"):
        assert figure in comment
    # Recyclic expects initial + all forwarded tickets: the comment predicts the variance it will show.
    assert f"attendu : {_euros(6930 - 5000 - 12750)}" in comment


def _euros(cents):
    from receiver.sinks.recyclic.mapping.mapper import euros
    return euros(cents)


def test_fixture_session_2_mixed_sale_and_return_forwards_the_sale(fixture_sessions):
    _, s2 = fixture_sessions
    m = map_session(s2, mapping())
    assert m.closing is not None  # sessions are closed by default
    assert m.opening.initial_cents == 6930  # euro cash only
    sales = {s.tab_id: s for s in m.sales}
    assert list(sales) == [6, 7, 8, 9, 10]
    # Tab 9: chair 12,00 € + return -3,00 €, paid 9,00 € by cheque. The chair (and its 4 kg) reach Recyclic,
    # paid 12,00 € by cheque; the return stays in Paheko with its share of the cheque (-3,00 €).
    assert items(sales[9]) == [(14, FURNITURE, 1, 4000, 1200, "Chaise")]
    assert payments(sales[9]) == [("check", 1200, (11,), (1200,))]
    assert parts(m) == [("refunds", 9, 15, None, -300, 0), ("refunds", 9, None, 11, -300, 0)]
    line, share = m.skipped
    assert (line.method, share.method) == (None, "Chèque")
    assert "« Retour article (remboursement) » (-3,00 €)" in share.reason and "12,00 € sont transmis" in share.reason
    r = m.reconciliation
    assert (r.items_cents.paheko, r.items_cents.forwarded, r.items_cents.skipped) == (7290, 7590, -300)
    assert (r.weight_grams.paheko, r.weight_grams.forwarded, r.weight_grams.skipped) == (26450, 26450, 0)
    assert {t.method_name: (t.paheko, t.forwarded, t.skipped) for t in r.payments} == {
        "Espèces": (1890, 1890, 0), "Chèque": (900, 1200, -300), "CB": (4500, 4500, 0)}


def test_default_policies_hold_both_sessions_with_french_reasons(fixture_sessions):
    s1, s2 = fixture_sessions
    reasons = held(s1, MappingSchema().load({}))
    assert reasons[:2] == [
        "Lieu Paheko « Boutique principale » non relié à un site Recyclic : ajoutez-le dans "
        "[sources.lab.mapping.locations].",
        "Opérateur Paheko « Alice (bénévole) » non relié à un utilisateur Recyclic : ajoutez-le dans "
        "[sources.lab.mapping.operators] ou indiquez default_operator.",
    ]
    assert ("Catégorie Paheko « Vêtements » non reliée à une catégorie Recyclic (tickets 1, 2) : ajoutez-la dans "
            "[sources.lab.mapping.categories].") in reasons
    assert ("Moyen de paiement Paheko « CB » non relié à un code de paiement Recyclic (ticket 2) : ajoutez-le "
            "dans [sources.lab.mapping.methods].") in reasons
    # Refunds are left out by default: only configuration gaps hold.
    assert not [r for r in reasons if r.startswith("Remboursements")]
    assert len(reasons) == 2 + 4 + 4  # location, operator, 4 categories, 4 methods
    # With the full mapping, refunds hold only when an operator asks for it.
    for snapshot, tab in ((s1, "ticket 4 : ligne « Retour article"), (s2, "ticket 9 : ligne « Retour article")):
        (reason,) = held(snapshot, mapping(policies={"refunds": "hold"}))
        assert reason.startswith("Remboursements, que Recyclic ne peut pas recevoir") and tab in reason


def test_unknown_method_and_category_skip(fixture_sessions):
    s1, _ = fixture_sessions
    methods = {k: v for k, v in METHODS.items() if k != "CB"}
    categories = {k: v for k, v in CATEGORIES.items() if k != "Livres"}
    m = map_session(s1, mapping(methods=methods, categories=categories,
                                policies={"unknown_method": "skip", "unknown_category": "skip"}))
    # Tab 1: the book line (200) is skipped; its single cash payment is split (900 forwarded, 200 recorded).
    sales = {s.tab_id: s for s in m.sales}
    assert items(sales[1]) == [(1, CLOTHES, 3, 600, 900, "T-shirt")]
    assert payments(sales[1]) == [("cash", 900, (1,), (900,))]
    # Tab 2: CB cannot be forwarded and cannot be re-booked on the cash: the whole tab is skipped.
    # Tab 5: the book (4,50 €) is left out with the payment of exactly its amount (4,50 € cash).
    assert list(sales) == [1, 3, 5]
    assert items(sales[5]) == [(7, APPLIANCES, 1, 1500, 1000, "Grille-pain")]
    assert payments(sales[5]) == [("monnaie_locale", 1000, (6,), (1000,))]
    assert {p.payment_id: p.amount_cents for p in m.skipped if p.tab_id == 5 and p.item_id is None} == {7: 450}
    kinds = {(p.tab_id, p.item_id, p.payment_id): p.kind for p in m.skipped}
    assert kinds[(1, 2, None)] == kinds[(1, None, 1)] == "unknown_category"
    assert kinds[(2, None, 2)] == "unknown_method" and kinds[(2, 3, None)] == "unknown_method"
    assert {p.amount_cents for p in m.skipped if (p.tab_id, p.payment_id) == (1, 1)} == {200}
    assert m.reconciliation.balanced
    assert "Catégorie Paheko « Livres » non reliée" in next(p.reason for p in m.skipped if p.item_id == 2)


def test_unknown_location_and_operator_skip_the_whole_session(fixture_sessions):
    s1, _ = fixture_sessions
    for changes in ({"locations": {}, "policies": {"unknown_location": "skip"}},
                    {"operators": {}, "default_operator": None, "policies": {"unknown_operator": "skip"}}):
        m = map_session(s1, mapping(close_session=True, **changes))
        assert m.opening is None and m.closing is None and m.sales == ()
        assert {p.kind for p in m.skipped} == {next(iter(changes["policies"]))}
        assert all(p.reason.startswith("Session entière écartée") for p in m.skipped)
        assert len(m.skipped) == 8 + 7  # every line and every payment
        assert m.reconciliation.balanced and m.reconciliation.tabs.skipped == 5


def test_opening_cash_beyond_recyclic_limit_holds(fixture_sessions):
    s1, _ = fixture_sessions
    rich = replace(s1, balances=[replace(s1.balances[0], open_amount=1_000_001), s1.balances[1]])
    (reason,) = held(rich, mapping())
    assert reason.startswith("Fond de caisse à l'ouverture (10000,01 €) supérieur au maximum accepté par Recyclic")


def test_operator_default_and_hold(fixture_sessions):
    s1, _ = fixture_sessions
    assert map_session(s1, mapping(operators={})).opening.operator_id == DEFAULT_OPERATOR
    (reason,) = held(s1, mapping(operators={}, default_operator=None))
    assert reason.startswith("Opérateur Paheko « Alice (bénévole) »")


def test_legacy_profile_mixed_methods(fixture_sessions):
    s1, _ = fixture_sessions
    legacy = dict(profile="legacy", methods={"Espèces": "cash", "Monnaie locale": "check", "CB": "card", "Chèque": "check"})
    (reason,) = held(s1, mapping(**legacy))
    assert "plusieurs moyens" in reason and "ticket 2 : card, cash" in reason and "ticket 5 : check, cash" in reason
    m = map_session(s1, mapping(**legacy, policies={"mixed_methods": "skip"}))
    assert m.close_session is True and m.closing is not None  # legacy closes by default
    assert [s.tab_id for s in m.sales] == [1, 3]
    assert all(len(s.payments) == 1 for s in m.sales)
    assert parts(m)[:4] == [("mixed_methods", 2, 3, None, 1000, 1250), ("mixed_methods", 2, 4, None, 1200, 4000),
                            ("mixed_methods", 2, None, 2, 1500, 0), ("mixed_methods", 2, None, 3, 700, 0)]
    assert parts(m)[4:6] == [("refunds", 4, 6, None, -300, 0), ("refunds", 4, None, 5, -300, 0)]
    assert {p.kind for p in parts_of(m, 5)} == {"mixed_methods"}
    assert m.reconciliation.balanced


# --- built databases ------------------------------------------------------------------------------------


def shop_mapping(ids, **changes):
    document = {
        "default_operator": DEFAULT_OPERATOR,
        "locations": {"Boutique": {"site": SITE, "register": REGISTER}, "Annexe": {"site": uid(5)}},
        "no_location": {"site": uid(6)},
        "categories": {"Vêtements": CLOTHES, "Livres": BOOKS, "Adhésion": "membership"},
        "methods": {"Espèces": "cash", "Chèque": "check", "CB": "card", "Espèces annexe": "cash"},
        **changes,
    }
    return MappingSchema().load(document)


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """Sessions covering debt, wallet, membership, per-kg, deleted products and locations."""
    path = tmp_path_factory.mktemp("shop") / "shop.sqlite"
    day = "2026-12-02"
    with PahekoDB(path) as db:
        ids = reference_data(db)
        s = {}
        # 1: debt and wallet.
        s["debt"] = db.open_session(f"{day} 09:00:00", location=ids["shop"], cash={ids["cash"]: 1000})
        t = db.tab(s["debt"], f"{day} 10:00:00", "sale on debt")
        db.item(t, f"{day} 10:00:00", "T-shirt", "Vêtements", price=300, weight=200, product=ids["tshirt"])
        db.payment(t, ids["debt"], 300, f"{day} 10:00:00")
        t = db.tab(s["debt"], f"{day} 10:10:00", "debt payoff")
        db.item(t, f"{day} 10:10:00", "Règlement d'ardoise", "Ardoise", price=300, type=1, id_method=ids["debt"])
        db.payment(t, ids["cash"], 300, f"{day} 10:10:00")
        t = db.tab(s["debt"], f"{day} 10:20:00", "wallet top-up")
        db.item(t, f"{day} 10:20:00", "Recharge", "Porte-monnaie", price=2000, type=2, id_method=ids["wallet"])
        db.payment(t, ids["cheque"], 2000, f"{day} 10:20:00")
        t = db.tab(s["debt"], f"{day} 10:30:00", "paid by wallet and cash")
        db.item(t, f"{day} 10:30:00", "Livre", "Livres", price=100, qty=4, weight=150, product=ids["book"])
        db.payment(t, ids["wallet"], 250, f"{day} 10:30:00")
        db.payment(t, ids["cash"], 150, f"{day} 10:30:00")
        t = db.tab(s["debt"], f"{day} 10:40:00", "plain")
        db.item(t, f"{day} 10:40:00", "Livre", "Livres", price=100, weight=150, product=ids["book"])
        db.payment(t, ids["cash"], 100, f"{day} 10:40:00")
        db.close_session(s["debt"], f"{day} 18:00:00", {ids["cash"]: 1550})
        # 2: membership, per-kg, a deleted product, an empty tab.
        s["members"] = db.open_session(f"{day} 19:00:00", location=ids["shop"], cash={ids["cash"]: 0})
        t = db.tab(s["members"], f"{day} 19:10:00", "joins and buys")
        db.item(t, f"{day} 19:10:00", "Adhésion annuelle", "Adhésion", price=1500, id_fee=1)
        db.item(t, f"{day} 19:10:00", "Vrac au kilo", "Vêtements", price=800, weight=1375, pricing=PRICING_PER_KG,
                product=ids["bulk"])
        db.payment(t, ids["cash"], 2600, f"{day} 19:10:00")
        t = db.tab(s["members"], f"{day} 19:20:00", "joins, pays two ways")
        db.item(t, f"{day} 19:20:00", "Adhésion", "Adhésion", price=1000)
        db.item(t, f"{day} 19:20:00", "T-shirt", "Vêtements", price=300, weight=200, product=ids["tshirt"])
        db.payment(t, ids["cash"], 300, f"{day} 19:20:00")
        db.payment(t, ids["card"], 1000, f"{day} 19:20:00")
        gone = db.product(ids["books"], "Vieux livre", 200, 300)
        t = db.tab(s["members"], f"{day} 19:30:00", "deleted product")
        db.item(t, f"{day} 19:30:00", "Vieux livre", "Livres", price=200, qty=2, weight=300, product=gone)
        db.payment(t, ids["cheque"], 400, f"{day} 19:30:00")
        db.delete_product(gone)
        db.tab(s["members"], f"{day} 19:40:00", "empty")
        db.close_session(s["members"], f"{day} 20:00:00", {ids["cash"]: 2900})
        # 3: the annex; 4: no location.
        s["annex"] = db.open_session(f"{day} 09:00:00", location=ids["annex"], cash={ids["annex_cash"]: 500}, user="Zoé")
        t = db.tab(s["annex"], f"{day} 11:00:00")
        db.item(t, f"{day} 11:00:00", "T-shirt", "Vêtements", price=300, weight=200, product=ids["tshirt"])
        db.payment(t, ids["annex_cash"], 300, f"{day} 11:00:00")
        db.close_session(s["annex"], f"{day} 17:00:00", {ids["annex_cash"]: 800})
        s["nowhere"] = db.open_session(f"{day} 09:00:00", cash={ids["cash"]: 0})
        t = db.tab(s["nowhere"], f"{day} 11:00:00")
        db.item(t, f"{day} 11:00:00", "Livre", "Livres", price=100, weight=150, product=ids["book"])
        db.payment(t, ids["cash"], 100, f"{day} 11:00:00")
        db.close_session(s["nowhere"], f"{day} 17:00:00", {ids["cash"]: 100})
    snapshots = dict(zip(s, read(path, *s.values()), strict=True))
    return ids, snapshots


def test_debt_and_wallet_hold_then_skip(shop):
    ids, snaps = shop
    (reason,) = held(snaps["debt"], shop_mapping(ids, policies={"debt_wallet": "hold"}))
    assert reason.startswith("Ardoise ou porte-monnaie, sans équivalent dans Recyclic (")
    for fragment in ("paiement Ardoise (3,00 €)", "règlement d'ardoise", "recharge de porte-monnaie",
                     "paiement Porte-monnaie (2,50 €)", 'debt_wallet = "skip"'):
        assert fragment in reason
    m = map_session(snaps["debt"], shop_mapping(ids))  # left out by default
    assert [(s.total_cents, payments(s)[0][:2]) for s in m.sales] == [(100, ("cash", 100))]
    assert {p.kind for p in m.skipped} == {"debt_wallet"}
    assert m.reconciliation.tabs.skipped == 4 and m.reconciliation.balanced
    by_method = {t.method_name: (t.paheko, t.forwarded, t.skipped) for t in m.reconciliation.payments}
    assert by_method == {"Espèces": (550, 100, 450), "Chèque": (2000, 0, 2000), "Ardoise": (300, 0, 300),
                         "Porte-monnaie": (250, 0, 250)}
    assert m.opening.initial_cents == 1000


def test_membership_split_per_kg_deleted_product_and_empty_tab(shop):
    ids, snaps = shop
    (reason,) = held(snaps["members"], shop_mapping(ids, policies={"membership": "hold"}))
    assert reason.startswith("Cotisations d'adhésion") and "Adhésion annuelle" in reason
    m = map_session(snaps["members"], shop_mapping(ids))  # left out by default
    sales = {s.tab_id: s for s in m.sales}
    first, _second, deleted, empty = (t.id for t in snaps["members"].tabs)
    # One cash payment paid the fee and the clothes: it is split, the fee's share recorded as skipped.
    (bulk,) = sales[first].items
    assert (bulk.quantity, bulk.weight_grams, bulk.total_cents) == (1, 1375, 1100)  # 800 c/kg × 1.375 kg
    assert [(p.amount_cents, p.paheko_amounts_cents) for p in sales[first].payments] == [(1100, (1100,))]
    fee_parts = [p for p in m.skipped if p.tab_id == first]
    assert sorted((p.item_id is None, p.amount_cents) for p in fee_parts) == [(False, 1500), (True, 1500)]
    # Fee 10,00 € + T-shirt 3,00 €, paid 3,00 € cash + 10,00 € card: the card paid exactly the fee.
    assert items(sales[_second])[0][2:5] == (1, 200, 300)
    assert [(p.code, p.amount_cents) for p in sales[_second].payments] == [("cash", 300)]
    assert [(p.method, p.amount_cents) for p in m.skipped if p.tab_id == _second and p.item_id is None] == [("CB", 1000)]
    assert items(sales[deleted]) == [(snaps["members"].tabs[2].items[0].id, BOOKS, 2, 600, 400, "Vieux livre")]
    assert snaps["members"].tabs[2].items[0].product_id is None
    assert [p.kind for p in m.skipped if p.tab_id == empty] == ["empty_tab"]
    assert m.reconciliation.balanced


def test_locations(shop):
    ids, snaps = shop
    annex = map_session(snaps["annex"], shop_mapping(ids))
    assert (annex.opening.site_id, annex.opening.register_id, annex.opening.operator_id) == (uid(5), None, DEFAULT_OPERATOR)
    assert annex.opening.initial_cents == 500 and annex.sales[0].payments[0].code == "cash"
    nowhere = map_session(snaps["nowhere"], shop_mapping(ids))
    assert nowhere.opening.site_id == uid(6)
    (reason,) = held(snaps["nowhere"], shop_mapping(ids, no_location=None))
    assert "[sources.lab.mapping.no_location]" in reason


def test_legacy_layout_single_drawer(tmp_path):
    path = tmp_path / "legacy.sqlite"
    with PahekoDB(path, layout="legacy") as db:
        db.method("Espèces", CASH, "530")  # the drawer's method, unused by the ticket
        card = db.method("CB", TRACKED, "5115")
        session = db.open_session("2026-03-01 09:00:00", cash=4000, user="Alice")
        t = db.tab(session, "2026-03-01 10:00:00")
        db.item(t, "2026-03-01 10:00:00", "Pull", "Vêtements", price=700, weight=400)
        db.payment(t, card, 700, "2026-03-01 10:00:00")
        db.close_session(session, "2026-03-01 18:00:00", 3990)
    (snapshot,) = read(path, session)
    m = map_session(snapshot, MappingSchema().load({
        "profile": "legacy", "default_operator": OPERATOR, "no_location": {"site": SITE},
        "categories": {"Vêtements": CLOTHES}, "methods": {"Espèces": "cash", "CB": "CARD"}}))
    assert (m.opening.initial_cents, m.closing.actual_cents) == (4000, 3990)
    assert payments(m.sales[0]) == [("card", 700, (1,), (700,))]
    assert "écart -0,10 €" in m.closing.variance_comment and "Hors espèces transmis : 7,00 € (card 7,00 €)" in m.closing.variance_comment


def test_unbalanced_tab_in_paheko_always_holds(tmp_path):
    path = tmp_path / "odd.sqlite"
    with PahekoDB(path) as db:
        ids = reference_data(db)
        session = db.open_session("2026-03-01 09:00:00", location=ids["shop"], cash={ids["cash"]: 0})
        t = db.tab(session, "2026-03-01 10:00:00")
        db.item(t, "2026-03-01 10:00:00", "Livre", "Livres", price=100, weight=150)
        db.payment(t, ids["cash"], 90, "2026-03-01 10:00:00")
        db.close_session(session, "2026-03-01 18:00:00", {ids["cash"]: 90})
    (snapshot,) = read(path, session)
    all_skip = {k: "skip" for k in ("refunds", "debt_wallet", "membership", "unknown_category", "unknown_method",
                                    "unknown_location", "unknown_operator", "mixed_methods")}
    (reason,) = held(snapshot, shop_mapping(ids, policies=all_skip))
    assert reason == (f"Ticket {t} : ses paiements (0,90 €) ne correspondent pas au total de ses lignes (1,00 €) "
                      "dans Paheko ; vérifiez ce ticket dans Paheko.")


# --- notes, keys, JSON ------------------------------------------------------------------------------------


def test_sale_note_and_key():
    assert sale_note("lab", 12, 345) == "Paheko lab session 12 ticket 345"
    assert parse_sale_note("Paheko my-org_2 session 12 ticket 345") == ("my-org_2", 12, 345)
    for other in (None, "", "Paheko lab session 1 ticket x", "note: Paheko lab session 1 ticket 2", "hello"):
        assert parse_sale_note(other) is None
    long_name = "a" * 63
    key = idempotency_key(long_name, 2**63 - 1, 2**63 - 1)
    assert len(key) <= 128 and key != idempotency_key(long_name, 2**63 - 1, 2**63 - 2)


def test_json_round_trip(fixture_sessions, shop):
    ids, snaps = shop
    mapped = [
        map_session(fixture_sessions[0], mapping(close_session=True)),
        map_session(fixture_sessions[1], mapping()),
        map_session(snaps["members"], shop_mapping(ids, policies={"membership": "skip"})),
        map_session(fixture_sessions[0], mapping(locations={}, policies={"unknown_location": "skip"})),
    ]
    for m in mapped:
        again = load_mapped(json.loads(json.dumps(dump_mapped(m))))
        assert again == m
        assert again.opening is None or again.opening.opened_at.utcoffset() == timedelta(hours=1)
    broken = dump_mapped(mapped[0])
    broken["sales"][0]["total_cents"] = "1100"
    with pytest.raises(Exception):
        load_mapped(broken)
    assert replace(mapped[0], sales=()) != mapped[0]


def test_allocate_shares_in_proportion_to_the_cent():
    from receiver.sinks.recyclic.mapping.mapper import allocate
    assert allocate(300, [(1, 900)]) == {1: 300}
    assert allocate(-450, [(6, 1000), (7, 450)]) == {6: 0, 7: -450}  # exactly one payment's amount
    shares = allocate(-100, [(1, 1), (2, 1), (3, 1)])
    assert sum(shares.values()) == -100 and sorted(shares.values()) == [-34, -33, -33]
    assert allocate(301, [(1, 700), (2, 300)]) == {1: 211, 2: 90}


def test_local_currency_unmapped_and_skipped_leaves_out_only_what_it_paid(fixture_sessions):
    """Tab 5: Grille-pain 10,00 € + Beau livre 4,50 €, paid 10,00 € in local currency + 4,50 € cash. Recyclic
    has no method for the local currency: only one split by whole lines exists (the book for the cash)."""
    s1, _ = fixture_sessions
    methods = {k: v for k, v in METHODS.items() if k != "Monnaie locale"}
    (reason,) = held(s1, mapping(methods=methods))
    assert reason.startswith("Moyen de paiement Paheko « Monnaie locale » non relié") and "ticket 5" in reason
    m = map_session(s1, mapping(methods=methods, policies={"unknown_method": "skip"}))
    sale = next(s for s in m.sales if s.tab_id == 5)
    assert items(sale) == [(8, BOOKS, 1, 1200, 450, "Beau livre")]
    assert payments(sale) == [("cash", 450, (7,), (450,))]
    assert [(p.kind, p.item_id, p.payment_id, p.amount_cents, p.weight_grams, p.method) for p in parts_of(m, 5)] == [
        ("unknown_method", 7, None, 1000, 1500, None), ("unknown_method", None, 6, 1000, 0, "Monnaie locale")]
    assert "seule répartition" in parts_of(m, 5)[0].reason
    assert m.opening.initial_cents == 5000 and m.reconciliation.balanced
    # Two equal lines for one payment: no single split, the whole tab is left out.
    from receiver.sinks.recyclic.mapping.mapper import unique_subset
    tab = s1.tabs[4]
    assert unique_subset([tab.items[0], tab.items[0]], 1000) is None


def test_local_currency_mapped_to_cash_holds(fixture_sessions):
    """Mapping « Monnaie locale » to cash would add its float to the euros and merge its takings: held, with
    words a Paheko admin can read (the status route drops the configuration part)."""
    from receiver.intake.status import admin_words

    s1, _ = fixture_sessions
    (reason,) = held(s1, mapping(methods={**METHODS, "Monnaie locale": "cash"}))
    assert reason.startswith("Moyen de paiement Paheko « Monnaie locale » relié à cash")
    assert admin_words(reason).endswith("Une correspondance à revoir : la personne qui gère le récepteur doit intervenir.")
