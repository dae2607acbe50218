"""Property: for any generated month (sessions mapped under any policies, forwarded in part, held, not yet
read), every report row balances — Paheko = forwarded + left out + held + pending — per category and per
method, to the article, the gram and the cent; and each column agrees with a count made straight from the
documents. A tampered document shows up as a gap (the check can fail)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver.sinks.recyclic.mapping.mapper import MappingHeld, map_session
from receiver.sinks.recyclic.mapping.model import dump_mapped
from receiver.report.reconcile import GROUPS, LedgerSession, group_of, reconcile
from receiver.reread.snapshot import dump_snapshot
from tests.test_mapping_property import mappings, sessions

PARIS_SUMMER = timezone(timedelta(hours=2))
MAY = (date(2026, 5, 1), date(2026, 5, 31))


@st.composite
def months(draw):
    """A month of ledger entries: (LedgerSession, snapshot object or None)."""
    out = []
    count = draw(st.integers(0, 6))
    for n in range(count):
        snapshot = draw(sessions())
        day = draw(st.integers(1, 31))
        opened = datetime(2026, 5, day, 9, 0, tzinfo=PARIS_SUMMER)
        snapshot = replace(snapshot, session_id=n + 1, opened=opened, closed=opened + timedelta(hours=8))
        unread = draw(st.integers(0, 9)) == 0
        if unread:
            out.append((LedgerSession("lab", n + 1, draw(st.sampled_from(("notified", "failed"))), None, None, None,
                                      {}, {"closed": f"2026-05-{day:02d} 18:00:00", "result": 100}), None))
            continue
        snap = json.loads(json.dumps(dump_snapshot(snapshot)))
        try:
            mapped = map_session(snapshot, draw(mappings()))
        except MappingHeld:
            state = draw(st.sampled_from(("held", "snapshot")))
            out.append((LedgerSession("lab", n + 1, state, None, snap, None, {}), snapshot))
            continue
        doc = json.loads(json.dumps(dump_mapped(mapped)))
        state = draw(st.sampled_from(("forwarded", "forwarded", "mapped", "failed", "held", "dead")))
        forwards = {}
        for sale in mapped.sales:
            status = "done" if state == "forwarded" else draw(st.sampled_from(("done", "sending", None)))
            if status:
                forwards[("sale", sale.tab_id)] = (status, f"r-{sale.tab_id}" if status == "done" else None)
        if state == "forwarded" and mapped.opening is not None and mapped.closing is not None:
            forwards[("close", n + 1)] = ("done", "r-session")
        out.append((LedgerSession("lab", n + 1, state, None, snap, doc, forwards), snapshot))
    return out


def _direct(month, key):
    """Per label: Paheko figures counted from snapshot objects (not the report's dict reading)."""
    out: dict[str, list[int]] = {}
    for _, snapshot in month:
        if snapshot is None:
            continue
        for tab in snapshot.tabs:
            if key == "cat":
                for item in tab.items:
                    f = out.setdefault(item.category_name, [0, 0, 0])
                    f[0] += item.qty
                    f[1] += item.qty * (item.weight or 0)
                    f[2] += item.total
            else:
                for pay in tab.payments:
                    out.setdefault(snapshot.methods[pay.method_id].name, [0, 0, 0])[2] += pay.amount
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(months())
def test_every_row_balances_and_matches_the_documents(month):
    report = reconcile("lab", [s for s, _ in month], *MAY)
    assert report.balanced and not report.findings
    for rows in (report.categories, report.methods, report.category_days, report.method_days, report.days,
                 [report.total, report.payments_total]):
        for row in rows:
            a = row.accounted
            assert (row.paheko.items, row.paheko.grams, row.paheko.cents) == (a.items, a.grams, a.cents), row

    for table, key in ((report.categories, "cat"), (report.methods, "pay")):
        direct = _direct(month, key)
        assert {r.label: [r.paheko.items, r.paheko.grams, r.paheko.cents] for r in table} == direct

    # forwarded = what the mapped sales hold for tabs recorded done, per category
    forwarded: dict[str, int] = {}
    left: dict[str, int] = {g: 0 for g in GROUPS}
    for session, snapshot in month:
        if session.mapped is None:
            continue
        name = {i.id: i.category_name for t in snapshot.tabs for i in t.items}
        for sale in session.mapped["sales"]:
            if session.forwards.get(("sale", sale["tab_id"]), ("",))[0] == "done":
                for line in sale["items"]:
                    forwarded[name[line["paheko_item_id"]]] = forwarded.get(name[line["paheko_item_id"]], 0) \
                        + line["total_cents"]
        for part in session.mapped["skipped"]:
            if part["item_id"] is not None:
                left[group_of(part["kind"])] += part["amount_cents"]
    assert {r.label: r.forwarded.cents for r in report.categories if r.forwarded.cents} == \
        {k: v for k, v in forwarded.items() if v}
    assert {g: report.total.left_out[g].cents for g in GROUPS} == left

    # per day sums to the period
    assert sum(d.paheko.cents for d in report.days) == report.total.paheko.cents
    assert sum(d.paheko.grams for d in report.days) == report.total.paheko.grams

    if not report.sessions:
        assert "aucune session" in report.verdict
    elif report.complete:
        assert ": tout est dans Recyclic" in report.verdict
    else:
        assert ": pas encore tout dans Recyclic" in report.verdict


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(months(), st.data())
def test_a_record_that_disagrees_with_paheko_is_a_gap(month, data):
    tamperable = [s for s, _ in month if s.mapped and (s.mapped["skipped"] or s.mapped["sales"])]
    if not tamperable:
        return
    victim = data.draw(st.sampled_from(tamperable))
    doc = json.loads(json.dumps(victim.mapped))
    if doc["skipped"] and data.draw(st.booleans()):
        dropped = doc["skipped"].pop(data.draw(st.integers(0, len(doc["skipped"]) - 1)))
        visible = bool(dropped["amount_cents"] or dropped["weight_grams"])
    elif any(s["items"] for s in doc["sales"]):
        line = next(i for s in doc["sales"] for i in s["items"])
        line["total_cents"] += 1
        visible = True
    else:
        return
    sessions_ = [replace(s, mapped=doc) if s is victim else s for s, _ in month]
    report = reconcile("lab", sessions_, *MAY)
    if visible:
        assert not report.balanced and report.findings
        assert "tout est dans Recyclic," not in report.verdict and "écart" in report.verdict
