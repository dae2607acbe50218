"""The Recyclic stand-in's read-back surface (v2): what a forwarder finds again in Recyclic.

The session listing and its filters, the session and sale shapes, idempotency kept in a store that a
Redis restart loses, the PIN failure window, the close checks in their real order, the close's side
effects and Recyclic's Paheko outbox. See /work/shared/facts/recyclic.md and receiver/dev/recyclic_views.py.
"""

from __future__ import annotations

import httpx
import pytest

from receiver.dev.recyclic import (
    LIVE_REGISTER, MACHINE_USER, MAIN_REGISTER, MAIN_SITE, REPLAY_REGISTER, SECOND_SITE, SHOP_USERS,
)
from tests.test_dev_recyclic import OPERATOR, _server, item, serve  # noqa: F401  (the module's server)

SESSION_KEYS = {  # 27 keys: the open/close answers and each listed session (observed: close n_keys=27)
    "operator_id", "site_id", "register_id", "initial_amount", "id", "current_amount", "status", "opened_at",
    "closed_at", "total_sales", "total_items", "number_of_sales", "total_donations", "total_weight_out",
    "closing_amount", "actual_amount", "variance", "variance_comment", "report_download_url", "report_email_sent",
    "register_options", "totals", "paheko_sync_correlation_id", "paheko_outbox_item_id",
    "accounting_config_revision_id", "accounting_close_snapshot", "closing_preview_theoretical_amount"}
SALE_IN_SESSION_KEYS = {  # observed (probe P16)
    "created_at", "donation", "id", "lifecycle_status", "note", "operator_id", "operator_name", "payment_method",
    "payments", "sale_date", "total_amount", "total_weight"}


@pytest.fixture
def v2():
    with serve("v2") as stand:
        stand.login()
        yield stand


def note(tab: int, session: int = 1) -> str:
    return f"Paheko lab session {session} ticket {tab}"


# -- the session listing ---------------------------------------------------------------------------


def test_listing_filters_by_status_and_counts_sales(v2):
    first = v2.open(opened_at="2026-03-01T09:00:00+01:00")
    second = v2.open(opened_at="2026-03-02T09:00:00+01:00")
    for tab in (1, 2):
        assert v2.sale(first, note=note(tab)).status_code == 200
    v2.sale(second, note=note(1, 2))
    assert v2.close(second, 26.0).status_code == 200
    listed = v2.http.get("/cash-sessions/", params={"status": "open"}).json()
    assert listed["total"] == 2 and listed["skip"] == 0 and listed["limit"] == 20
    live, ours = listed["data"]  # newest opening first: the shop's own session, opened this morning
    assert live["register_id"] == LIVE_REGISTER.id and live["number_of_sales"] == 2
    assert ours["id"] == first and ours["number_of_sales"] == 2 and set(ours) == SESSION_KEYS
    closed = v2.http.get("/cash-sessions/", params={"status": "closed", "operator_id": OPERATOR}).json()["data"]
    assert [s["id"] for s in closed] == [second] and closed[0]["number_of_sales"] == 1
    mine = v2.http.get("/cash-sessions/", params={"operator_id": OPERATOR}).json()["data"]
    assert [s["id"] for s in mine] == [second, first]
    # elsewhere number_of_sales is not computed
    assert v2.http.get(f"/cash-sessions/{first}").json()["number_of_sales"] is None


def test_listing_hides_empty_sessions_unless_asked(v2):
    empty = v2.open(opened_at="2026-03-01T09:00:00+00:00")
    mine = {"operator_id": OPERATOR}
    assert v2.http.get("/cash-sessions/", params=mine).json() == {"data": [], "total": 0, "skip": 0, "limit": 20}
    shown = v2.http.get("/cash-sessions/", params={**mine, "include_empty": "true", "status": "open"}).json()
    assert [s["id"] for s in shown["data"]] == [empty] and shown["data"][0]["number_of_sales"] == 0


def test_listing_filters_by_operator_site_dates_and_search_and_pages(v2):
    ids = []
    for day in range(1, 6):
        session = v2.open(opened_at=f"2026-03-0{day}T10:00:00+00:00")
        v2.sale(session)
        ids.append(session)
    newest_first = list(reversed(ids))

    def listed(**params) -> list[str]:
        response = v2.http.get("/cash-sessions/", params=params)
        assert response.status_code == 200, response.text
        return [s["id"] for s in response.json()["data"]]

    shop = [s.id for s in sorted((v2.app.store.sessions[i] for i in v2.app.store.seeded
                                  if i in v2.app.store.sessions), key=lambda s: s.opened_at, reverse=True)]
    assert len(shop) == 2  # the shop's own: yesterday's and today's, opened after ours (March)
    assert listed(operator_id=OPERATOR) == newest_first
    assert listed(operator_id=MACHINE_USER.id) == []
    assert listed(site_id=MAIN_SITE.id) == shop + newest_first
    assert listed(site_id=SECOND_SITE.id) == []
    assert listed(date_from="2026-03-02T10:00:00Z", date_to="2026-03-04T10:00:00") == newest_first[1:4]
    assert listed(search=ids[2][:8]) == [ids[2]]
    assert listed(search="caisse-diff") == newest_first  # the operator's user name
    assert listed(operator_id=OPERATOR, skip=1, limit=2) == newest_first[1:3]
    # no register filter on the real route: the parameter is ignored like any unknown one
    assert listed(register_id=REPLAY_REGISTER.id) == shop + newest_first
    assert v2.http.get("/cash-sessions/", params={"limit": 101}).status_code == 422
    assert v2.http.get("/cash-sessions/", params={"status": "pending"}).status_code == 422


def test_register_status_tells_whether_a_register_is_in_live_use(v2):
    assert v2.http.get(f"/cash-sessions/status/{MAIN_REGISTER.id}").json() == {"is_active": False, "session_id": None}
    live = v2.open(register_id=MAIN_REGISTER.id)
    assert v2.http.get(f"/cash-sessions/status/{MAIN_REGISTER.id}").json() == {"is_active": True, "session_id": live}
    shop = v2.http.get(f"/cash-sessions/status/{LIVE_REGISTER.id}").json()
    assert shop["is_active"] is True and v2.app.store.sessions[shop["session_id"]].operator_id == SHOP_USERS[0].id
    refused = v2.http.post("/cash-sessions/", json={"operator_id": MACHINE_USER.id, "site_id": MAIN_SITE.id,
                                                    "register_id": LIVE_REGISTER.id, "initial_amount": 0})
    assert refused.status_code == 400
    assert refused.json()["detail"] == "Une session est déjà ouverte pour ce poste de caisse"


# -- read-back shapes ------------------------------------------------------------------------------


def test_session_and_sale_read_back_shapes(v2):
    session = v2.open()
    sale = v2.sale(session, note=note(1)).json()
    opened = v2.http.get(f"/cash-sessions/{session}").json()
    assert set(opened) == SESSION_KEYS | {"sales", "operator_name", "site_name"}
    assert opened["operator_name"] == "caisse-differee" and opened["site_name"] == MAIN_SITE.name
    (listed_sale,) = opened["sales"]
    assert set(listed_sale) == SALE_IN_SESSION_KEYS
    assert listed_sale["note"] == note(1) and listed_sale["operator_name"] == MACHINE_USER.username
    assert listed_sale["total_weight"] == 0.75 and listed_sale["lifecycle_status"] == "completed"
    full = v2.http.get(f"/sales/{sale['id']}").json()
    assert full["cash_session_id"] == session and full["items"][0]["weight"] == 0.75
    assert {"fiscal_branch", "sale_fiscal_year", "current_open_fiscal_year", "effective_business_tag"} <= set(full)


def test_amounts_read_back_carry_float_artefacts_like_the_real_columns(v2):
    session = v2.open(initial_amount=0)
    for amount in (0.1, 0.2):
        v2.sale(session, amount, items=[item(amount, weight=amount)])
    body = v2.http.get(f"/cash-sessions/{session}").json()
    assert body["total_weight_out"] == body["total_sales"] == 0.30000000000000004
    closed = v2.close(session, 0.0, "rien en caisse").json()
    assert closed["variance"] == -0.30000000000000004
    assert v2.app.store.sessions[session].variance == -30  # the stand-in's own cents stay exact


# -- idempotency and PIN state live in a store that can be lost ------------------------------------


def test_flushing_redis_forgets_idempotency_keys_so_a_replay_duplicates(v2):
    session = v2.open()
    first = v2.sale(session, headers={"Idempotency-Key": "tab-1"}).json()
    replay = v2.sale(session, headers={"Idempotency-Key": "tab-1"}).json()
    assert replay["id"] == first["id"]
    assert set(first) - set(replay) == {"fiscal_branch", "sale_fiscal_year", "current_open_fiscal_year",
                                        "effective_business_tag"}  # observed (probe P8b)
    flushed = httpx.post(v2.root + "/_stand-in/redis/flush").json()
    assert flushed["flushed"] >= 1
    duplicate = v2.sale(session, headers={"Idempotency-Key": "tab-1"}).json()
    assert duplicate["id"] != first["id"] and len(v2.app.store.new_sales()) == 2
    assert len(v2.app.store.new_sessions()) == 1  # PostgreSQL data survives


def test_pin_failures_expire_after_the_window_and_a_flush_lifts_the_lock(v2):
    session = v2.open()
    v2.sale(session)
    for _ in range(4):
        assert v2.close(session, 26.0, pin="9999").json()["code"] == "STEP_UP_PIN_INVALID"
    v2.clock.advance(seconds=61)  # the window opened by the first failure is over
    for _ in range(4):
        assert v2.close(session, 26.0, pin="9999").json()["code"] == "STEP_UP_PIN_INVALID"
    fifth = v2.close(session, 26.0, pin="9999")
    assert fifth.status_code == 403 and fifth.json()["code"] == "STEP_UP_PIN_INVALID"
    assert v2.close(session, 26.0).json()["code"] == "STEP_UP_LOCKED"
    v2.app.store.flush_redis()
    assert v2.close(session, 26.0).status_code == 200


def test_the_right_pin_resets_the_failure_count(v2):
    session, other = v2.open(), v2.open(opened_at="2026-03-01T10:00:00Z")
    v2.sale(session), v2.sale(other)
    for _ in range(4):
        v2.close(session, 26.0, pin="0000")
    assert v2.close(session, 26.0).status_code == 200
    for _ in range(4):
        v2.close(other, 26.0, pin="0000")
    assert v2.close(other, 26.0).status_code == 200


# -- close: checks in the real order, side effects -------------------------------------------------


def test_close_checks_pin_then_variance_then_empty_then_close_mapping():
    with serve("v2", paheko_close_mappings=[]) as stand:
        stand.login()
        empty = stand.open(opened_at="2026-03-01T10:00:00Z", initial_amount=10.0)
        assert stand.close(empty, 10.0, pin="").json()["code"] == "STEP_UP_PIN_REQUIRED"
        # an empty session counted at another amount than its float needs a comment before it is deleted
        assert stand.close(empty, 0.0).status_code == 400
        deleted = stand.close(empty, 10.0)  # no close mapping, yet the empty session goes
        assert deleted.status_code == 200 and deleted.json()["deleted"] is True
        session = stand.open()
        stand.sale(session)
        no_comment = stand.close(session, 1.0)
        assert no_comment.status_code == 400 and no_comment.json()["detail"] == (
            "Un commentaire est obligatoire en cas d'écart entre le montant théorique (26.00€) et le montant "
            "physique (1.00€). Écart: -25.00€")
        refused = stand.close(session, 1.0, "compté")
        assert refused.status_code == 409 and refused.json()["code"] == "PAHEKO_SYNC_FINAL_ACTION_REFUSED"
        assert stand.app.store.sessions[session].status == "open" and stand.app.store.outbox == {}


def test_a_variance_within_five_cents_needs_no_comment(v2):
    session = v2.open()
    v2.sale(session)
    assert v2.close(session, 25.96).status_code == 200


def test_close_answer_shows_report_snapshot_and_outbox_item(v2):
    session = v2.open()
    v2.sale(session, 6.0, method="card")
    closed = v2.close(session, 20.0, "Paheko : 6,00 € par carte").json()
    assert set(closed) == SESSION_KEYS
    assert closed["report_download_url"].startswith("/api/v1/admin/reports/cash-sessions/")
    assert closed["accounting_close_snapshot"]["totals"]["by_payment_method_signed"] == {"card": 6.0}
    item_id = closed["paheko_outbox_item_id"]
    assert item_id and closed["paheko_sync_correlation_id"]
    items = v2.http.get("/admin/paheko-outbox/items", params={"cash_session_id": session}).json()
    assert items["total"] == 1
    (item_row,) = items["data"]
    assert (item_row["id"], item_row["operation_type"], item_row["outbox_status"], item_row["sync_state_core"]) == (
        item_id, "cash_session_close", "pending", "a_reessayer")
    # a read-back after the close keeps the snapshot but not the one-off links
    again = v2.http.get(f"/cash-sessions/{session}").json()
    assert again["accounting_close_snapshot"] == closed["accounting_close_snapshot"]
    assert again["report_download_url"] is None


def test_outbox_item_rejection_rules(v2):
    session = v2.open()
    v2.sale(session)
    item_id = v2.close(session, 26.0).json()["paheko_outbox_item_id"]
    reject = f"/admin/paheko-outbox/items/{item_id}/reject"
    assert v2.http.post(reject, json={"reason": "  "}).status_code == 422
    done = v2.http.post(reject, json={"reason": "Déjà comptabilisé par la caisse Paheko"})
    assert done.status_code == 200
    assert (done.json()["outbox_status"], done.json()["sync_state_core"]) == ("failed", "rejete")
    again = v2.http.post(reject, json={"reason": "encore"})
    assert again.status_code == 200 and again.json()["rejection_reason"] == "Déjà comptabilisé par la caisse Paheko"
    unknown = v2.http.post("/admin/paheko-outbox/items/00000000-0000-0000-0000-000000000000/reject",
                           json={"reason": "x"})
    assert unknown.status_code == 404
    other = v2.open()
    v2.sale(other)
    pushed = v2.close(other, 26.0).json()["paheko_outbox_item_id"]
    httpx.post(f"{v2.root}/_stand-in/paheko-outbox/{pushed}/deliver")
    late = v2.http.post(f"/admin/paheko-outbox/items/{pushed}/reject", json={"reason": "trop tard"})
    assert late.status_code == 409
    v2.login(next(u for u in v2.app.store.users.values() if u.role == "user"))
    assert v2.http.get("/admin/paheko-outbox/items").status_code == 403


def test_unknown_routes_methods_and_replay_register():
    with serve("v2") as stand:
        stand.login()
        listing = stand.http.get("/sales/")
        assert listing.status_code == 405
        assert (listing.json()["code"], listing.json()["detail"]) == ("HTTP_405", "Method Not Allowed")
        assert stand.http.get(f"/cash-sessions/status/{REPLAY_REGISTER.id}").json()["is_active"] is False


# -- sales and openings as the real v2 takes them --------------------------------------------------


def test_free_tickets_and_sales_without_a_payments_field(v2):
    session = v2.open()
    free = v2.sale(session, 0.0, items=[item(0.0)], payments=[], note="gratuit")
    assert free.status_code == 200 and free.json()["payments"] == []
    zero_qty = v2.sale(session, 0.0, items=[item(0.0, quantity=0)], payments=[])
    assert zero_qty.status_code == 200
    body = {"cash_session_id": session, "items": [item(2.0)], "total_amount": 2.0, "note": "sans paiement"}
    no_field = v2.http.post("/sales/", json=body)
    assert no_field.status_code == 200
    assert [(p["payment_method"], p["amount"]) for p in no_field.json()["payments"]] == [("cash", 2.0)]
    assert v2.sale(session, 2.0, payments=[]).status_code == 400  # Σ payments must equal the total


def test_unknown_operator_is_404_and_a_sale_into_a_closed_session_is_422(v2):
    unknown = v2.http.post("/cash-sessions/", json={
        "operator_id": "5d0b7a0e-0000-4000-8000-000000000000", "site_id": MAIN_SITE.id,
        "register_id": REPLAY_REGISTER.id, "initial_amount": 10, "opened_at": "2026-03-11T10:00:00"})
    assert unknown.status_code == 404
    assert (unknown.json()["code"], unknown.json()["detail"]) == ("NOT_FOUND", "Opérateur non trouvé")
    session = v2.open()
    v2.sale(session)
    v2.close(session, 26.0)
    late = v2.sale(session)
    assert late.status_code == 422 and late.json()["code"] == "VALIDATION_ERROR"
    assert late.json()["detail"] == "Impossible de créer une vente pour une session fermée (statut: closed)"
    null_weight = v2.sale(session, items=[item(weight=None)]).json()["detail"][0]
    assert (null_weight["type"], null_weight["msg"]) == ("float_type", "Input should be a valid number")
