"""The month report on the fixture's sessions carried by the real pipeline (local Paheko and Recyclic
stand-ins), through the command line, with --verify, and on generated months with unfinished sessions."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from functools import partial
from datetime import date

import pytest
from click.testing import CliRunner

from receiver.cli import main
from receiver.ledger import Ledger, State
from receiver.report.ledger import load_sessions
from receiver.report.reconcile import (
    Figures, LedgerSession, Row, euros, kilos, period_label, reconcile,
)
from receiver.report.render import csv_header, render_csv, render_text
from receiver.report.verify import cents_of, grams_of, verify
from tests.report_support import fill_ledger
from tests.test_pipeline import build

NOVEMBER = (date(2026, 11, 1), date(2026, 11, 30))


@pytest.fixture(scope="module")
def carried(tmp_path_factory):
    """The two fixture sessions (24/11/2026), forwarded to the Recyclic stand-in, refunds left out."""
    p = build(tmp_path_factory.mktemp("report"))
    p.run()
    assert {e.state for e in p.ledger.list()} == {State.FORWARDED}
    yield p
    for server in p._servers:
        server.stop()
    p.ledger.close()


def fixture_expectations(carried) -> dict:
    """The fixture month's figures counted without the report: Paheko's from the snapshots, Recyclic's from
    the stand-in's own store, the left-out refunds from the mapped documents' skipped parts."""
    entries = carried.ledger.list(source="lab")
    store = carried.recyclic_app.store
    parts = [p for e in entries for p in e.mapped["skipped"] if p["kind"] == "refunds"]
    return {
        "paheko": (sum(e.snapshot["totals"]["items_total"] for e in entries),
                   sum(e.snapshot["totals"]["weight_grams"] for e in entries)),
        "recyclic": (sum(s.total_amount for s in store.new_sales().values()),
                     sum(line.weight_g for s in store.new_sales().values() for line in s.items)),
        "refund_lines": (sum(p["amount_cents"] for p in parts if p["item_id"] is not None),
                         sum(p["weight_grams"] for p in parts if p["item_id"] is not None)),
        "sales": sum(1 for e in entries for (kind, _), f in carried.ledger.forwards_of(e.id).items()
                     if kind == "sale" and f.status == "done"),
    }


def fixture_verdict(expected: dict) -> str:
    cents, grams = expected["refund_lines"]
    return ("Novembre 2026 : tout est dans Recyclic, sauf " + euros(abs(cents)) + " de remboursements"
            + (f" ({kilos(abs(grams))})" if grams else "") + ".")


def test_fixture_month_figures_and_verdict(carried):
    sessions = load_sessions(carried.ledger, "lab", *NOVEMBER)
    report = reconcile("lab", sessions, *NOVEMBER)
    expected = fixture_expectations(carried)
    assert report.balanced and report.complete and not report.findings
    # the fixture: 197,40 € and 97,300 kg sold in Paheko, some refunds left out (how many: the mapping decides)
    assert (report.total.paheko.cents, report.total.paheko.grams) == expected["paheko"] == (19740, 97300)
    assert (report.total.forwarded.cents, report.total.forwarded.grams) == expected["recyclic"]
    refunds = report.total.left_out["refunds"]
    assert (refunds.cents, refunds.grams) == expected["refund_lines"] != (0, 0)
    assert report.total.paheko.cents == expected["recyclic"][0] + expected["refund_lines"][0]
    assert report.verdict == fixture_verdict(expected)
    by_method = {row.label: row for row in report.methods}
    assert by_method["CB"].targets == {"card"} and by_method["Monnaie locale"].paheko.cents == 1000
    assert sum(row.forwarded.cents for row in report.methods) == expected["recyclic"][0]
    assert sum(row.paheko.cents for row in report.methods) == 19740
    assert [d.day for d in report.days] == [date(2026, 11, 24)]
    assert [(s.session_id, s.paheko, s.recyclic) for s in report.sessions] == [(1, "fermée", "fermée"),
                                                                               (2, "fermée", "fermée")]
    text = render_text(report)
    assert text.splitlines()[0] == report.verdict and "Sessions à surveiller : 0 sur 2" in text


def test_other_months_and_sources_are_empty(carried):
    october = reconcile("lab", load_sessions(carried.ledger, "lab", date(2026, 10, 1), date(2026, 10, 31)),
                        date(2026, 10, 1), date(2026, 10, 31))
    assert october.sessions == [] and october.verdict.startswith("Octobre 2026 : aucune session")
    assert load_sessions(carried.ledger, "other", *NOVEMBER) == []


def test_verify_against_recyclic_finds_nothing_then_each_tampering(carried):
    from receiver.sinks.recyclic.client import RecyclicClient

    sessions = load_sessions(carried.ledger, "lab", *NOVEMBER)
    client = RecyclicClient(carried.config.sources["lab"].sink)
    try:
        clean = verify(sessions, client.get)
        assert clean.findings == [] and clean.sessions == 2 and clean.sales == fixture_expectations(carried)["sales"]
        store = carried.recyclic_app.store
        sale = next(s for s in store.new_sales().values() if len(s.items) > 1)
        line = sale.items[0]
        saved = (line.weight_g, line.weight_kg)
        line.weight_g, line.weight_kg = line.weight_g + 5, (line.weight_g + 5) / 1000
        lost_session = next(x for x in store.new_sessions().values() if sale.id not in x.sale_ids)
        session = lost_session
        lost = session.sale_ids.pop()
        try:
            found = verify(sessions, client.get).findings
        finally:
            line.weight_g, line.weight_kg = saved
            session.sale_ids.append(lost)
        weights = [f for f in found if "kg dans Recyclic" in f]
        assert len(weights) == 1 and ", ticket " in weights[0], found
        want = sum(line.weight_g for line in sale.items)  # the true weight, restored below
        assert f"{kilos(want + 5)} dans Recyclic, {kilos(want)} transmis" in weights[0]
        assert len(found) == 2, found
        assert any(lost in f and "n'est pas dans cette session" in f for f in found), found
        assert verify(sessions, client.get).findings == []
        # Observed on the real v2: a transfer payment reads back as payment_method "card" (the old enum),
        # payment_method_code "transfer"; the stand-in does the same, and --verify compares the code.
        transfer = next(s for s in store.new_sales().values() if ("transfer", 1000) in s.payments)
        rows = client.get(f"sales/{transfer.id}")["payments"]
        assert {(p["payment_method"], p["payment_method_code"]) for p in rows} >= {("card", "transfer")}
    finally:
        client.close()


def test_report_command_text_csv_html(carried, tmp_path):
    runner = CliRunner()
    config = str(carried.config.path)
    html = tmp_path / "nov.html"
    result = runner.invoke(main, ["--config", config, "report", "--source", "lab", "--month", "2026-11",
                                  "--html", str(html)])
    assert result.exit_code == 0, result.output
    expected = fixture_expectations(carried)
    assert result.stdout.splitlines()[0] == fixture_verdict(expected)
    page = html.read_text(encoding="utf-8")
    assert 'id="chart-kg"' in page and 'id="chart-euros"' in page and "src=" not in page and "<script" not in page
    result = runner.invoke(main, ["--config", config, "report", "--source", "lab", "--since", "2026-11-20",
                                  "--until", "2026-11-30", "--csv", "--no-paheko"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == csv_header()
    total = next(r for r in rows if r["section"] == "category_total")
    assert (int(total["paheko_cents"]), int(total["forwarded_cents"]), int(total["left_out_refunds_cents"])) == \
        (19740, expected["recyclic"][0], expected["refund_lines"][0])
    cats = [r for r in rows if r["section"] == "category"]
    assert sum(int(r["paheko_grams"]) for r in cats) == int(total["paheko_grams"]) == 97300
    result = runner.invoke(main, ["--config", config, "report", "--source", "lab", "--month", "2026-11",
                                  "--verify", "--no-paheko"])
    assert result.exit_code == 0, result.output
    assert f"2 session(s), {expected['sales']} sale(s)" in result.stderr and "0 difference(s)" in result.stderr
    assert runner.invoke(main, ["--config", config, "report", "--source", "nope"]).exit_code == 2
    assert runner.invoke(main, ["--config", config, "report", "--month", "2026-13"]).exit_code == 2


def test_unfinished_sessions_are_pending_held_or_unread(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.sqlite'}")
    ledger.migrate()
    days = [date(2025, 9, d) for d in (2, 3, 4, 5, 6)]
    snapshots = fill_ledger(ledger, days, 12, unfinished={2: "mapped", 3: "held", 4: "notified"})
    assert all(s.consistent for s in snapshots.values())  # generated like a re-read: its checks pass
    try:
        report = reconcile("shop", load_sessions(ledger, "shop", date(2025, 9, 1), date(2025, 9, 30)),
                           date(2025, 9, 1), date(2025, 9, 30), open_in_paheko=[(6, date(2025, 9, 7))])
    finally:
        ledger.close()
    assert report.balanced
    held = sum(i.total for t in snapshots[3].tabs for i in t.items)
    assert report.total.held.cents == held
    assert 0 < report.total.pending.cents < sum(i.total for t in snapshots[2].tabs for i in t.items)
    text = report.verdict
    assert text.startswith("Septembre 2025 : pas encore tout dans Recyclic — ")
    assert f"{euros(report.total.pending.cents)} pas encore transmis" in text
    assert f"{euros(held)} bloqués" in text
    assert "2 session(s) pas encore relue(s) ou encore ouverte(s) dans Paheko" in text
    lines = {s.session_id: s for s in report.attention}
    assert set(lines) == {2, 3, 4, 6}
    assert lines[2].recyclic == "ouverte, transmission inachevée" and lines[4].paheko == "pas encore relue"
    assert lines[6].paheko == "ouverte" and lines[3].state == "held"
    rows = list(csv.reader(io.StringIO(render_csv(report))))
    assert len(rows) == 1 + len(report.categories) + 1 + len(report.methods) + 1 + len(report.days) \
        + len(report.category_days) + len(report.method_days)


def test_gap_is_reported_and_stops_the_all_clear():
    snap = {"opened": "2025-09-02T10:00:00+02:00", "methods": {"1": {"name": "Espèces"}},
            "tabs": [{"id": 1, "items": [{"id": 1, "qty": 2, "weight": 500, "total": 800, "category_name": "Livres"}],
                      "payments": [{"id": 1, "method_id": 1, "amount": 800}]}]}
    mapped = {"sales": [{"tab_id": 1, "items": [{"paheko_item_id": 1, "category_id": "c", "quantity": 2,
                                                  "weight_grams": 1000, "total_cents": 700}],
                         "payments": [{"code": "cash", "amount_cents": 700, "paheko_payment_ids": [1],
                                       "paheko_amounts_cents": [700]}]}],
              "skipped": [], "opening": {}, "close_session": True}
    s = LedgerSession("shop", 1, "forwarded", None, snap, mapped, {("sale", 1): ("done", "x"), ("close", 1): ("done", "y")})
    report = reconcile("shop", [s], date(2025, 9, 1), date(2025, 9, 30))
    assert not report.balanced and report.total.gap.cents == 100
    assert "écart" in report.verdict and len(report.findings) == 2
    fixed = replace(s, mapped={**mapped, "sales": [{**mapped["sales"][0], "items": [
        {**mapped["sales"][0]["items"][0], "total_cents": 800}], "payments": [
        {**mapped["sales"][0]["payments"][0], "amount_cents": 800, "paheko_amounts_cents": [800]}]}]})
    assert reconcile("shop", [fixed], date(2025, 9, 1), date(2025, 9, 30)).verdict == \
        "Septembre 2025 : tout est dans Recyclic."


def test_words():
    assert euros(-300) == "-3,00 €" and euros(123456789) == "1\u202f234\u202f567,89 €"
    assert kilos(1350) == "1,350 kg" and kilos(-5) == "-0,005 kg"
    assert period_label(date(2025, 9, 1), date(2025, 9, 30)) == "Septembre 2025"
    assert period_label(date(2024, 2, 1), date(2024, 2, 29)) == "Février 2024"
    assert period_label(date(2025, 9, 1), date(2025, 9, 29)) == "Du 01/09/2025 au 29/09/2025"
    assert period_label(date(2025, 1, 1), date(2025, 12, 31)) == "Année 2025"
    assert cents_of(70.85000000000001) == 7085 and grams_of(35.000000000000064) == 35000 and grams_of(None) == 0
    row = Row("x")
    row.paheko.add(1, 2, 3)
    row.left_out["refunds"].add(1, 2, 3)
    assert not row.gap and row.accounted == Figures(1, 2, 3)


def test_sessions_still_open_in_paheko_are_listed(carried):
    import sqlite3

    con = sqlite3.connect(carried.paheko_db)
    try:
        con.execute("INSERT INTO plugin_pos_sessions (id, id_location, opened, open_user) "
                    "VALUES (3, 1, '2026-11-25 09:30:00', 'Alice')")
        con.commit()
        result = CliRunner().invoke(main, ["--config", str(carried.config.path), "report", "--source", "lab",
                                           "--month", "2026-11"])
    finally:
        con.execute("DELETE FROM plugin_pos_sessions WHERE id = 3")
        con.commit()
        con.close()
    assert result.exit_code == 0, result.output  # every figure accounted for; one session to watch
    first = result.stdout.splitlines()[0]
    assert first.startswith("Novembre 2026 : pas encore tout dans Recyclic — 1 session(s) pas encore relue(s) "
                            "ou encore ouverte(s) dans Paheko"), first
    assert "Sessions à surveiller : 1 sur 3" in result.stdout
    line = next(x for x in result.stdout.splitlines() if x.strip().startswith("3 "))
    assert "25/11" in line and "ouverte" in line and "pas encore transmise" in line


def test_document_sinks_count_the_whole_session_as_forwarded():
    """File and webhook sinks record one ``document`` per session: every sale in it is forwarded."""
    snap = {"opened": "2025-09-02T10:00:00+02:00", "methods": {"1": {"name": "CB"}},
            "tabs": [{"id": 4, "items": [{"id": 9, "qty": 1, "weight": None, "total": 500, "category_name": "Jouets"}],
                      "payments": [{"id": 3, "method_id": 1, "amount": 500}]}]}
    mapped = {"sales": [{"tab_id": 4, "items": [{"paheko_item_id": 9, "category_id": "j", "quantity": 1,
                                                  "weight_grams": 0, "total_cents": 500}],
                         "payments": [{"code": "card", "amount_cents": 500, "paheko_payment_ids": [3],
                                       "paheko_amounts_cents": [500]}]}], "skipped": []}
    waiting = LedgerSession("shop", 1, "mapped", None, snap, mapped, {})
    sent = replace(waiting, state="forwarded", forwards={("document", 1): ("done", "sha256:…")})
    before = reconcile("shop", [waiting], date(2025, 9, 1), date(2025, 9, 30))
    after = reconcile("shop", [sent], date(2025, 9, 1), date(2025, 9, 30))
    assert before.total.pending.cents == 500 and before.payments_total.pending.cents == 500
    assert after.total.forwarded.cents == 500 and after.payments_total.forwarded.cents == 500
    assert after.sessions[0].recyclic == "transmise (document)" and after.complete


def test_verify_sweep_finds_a_ticket_recyclic_holds_twice(carried):
    """A Recyclic session the ledger did not forward, at the same site and day, holding one of this source's
    tickets: the sweep reports it (one listing per site, one read per unknown session)."""
    from receiver.dev.recyclic import CATEGORIES
    from receiver.report.verify import Verification, sweep
    from receiver.sinks.recyclic.sink import RecyclicSink, list_sessions

    sessions = load_sessions(carried.ledger, "lab", *NOVEMBER)
    sink = RecyclicSink(carried.config.sources["lab"].sink)
    store = carried.recyclic_app.store
    before = set(store.sessions)
    try:
        clean = Verification()
        sweep(sessions, "lab", *NOVEMBER, carried.config.sources["lab"].timezone, partial(list_sessions, sink.client),
              sink.client.get, clean)
        assert clean.findings == []
        opening = sessions[0].mapped["opening"]
        other = sink.client.post("cash-sessions/", {
            "operator_id": opening["operator_id"], "site_id": opening["site_id"], "register_id": opening["register_id"],
            "initial_amount": 0, "opened_at": "2026-11-24T09:00:00+01:00"})["id"]
        sink.client.post("sales/", {
            "cash_session_id": other, "total_amount": 2.0, "note": "Paheko lab session 1 ticket 1",
            "items": [{"category": CATEGORIES[0].id, "quantity": 1, "weight": 0.2, "unit_price": 2.0,
                       "total_price": 2.0}],
            "payments": [{"payment_method": "cash", "amount": 2.0}]})
        found = Verification()
        sweep(sessions, "lab", *NOVEMBER, carried.config.sources["lab"].timezone, partial(list_sessions, sink.client),
              sink.client.get, found)
        assert len(found.findings) == 1 and other in found.findings[0] and "session(s) Paheko 1" in found.findings[0]
        # outside the period, nothing is looked at
        december = Verification()
        sweep(sessions, "lab", date(2026, 12, 1), date(2026, 12, 31), carried.config.sources["lab"].timezone,
              partial(list_sessions, sink.client), sink.client.get, december)
        assert december.findings == []
    finally:
        for session_id in set(store.sessions) - before:
            for sale_id in store.sessions.pop(session_id).sale_ids:
                store.sales.pop(sale_id, None)
        sink.close()
