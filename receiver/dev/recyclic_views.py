"""What the Recyclic stand-in answers when a session or a sale is read back, per profile.

v2 (observed on the real 1.4.4, probe P12/P16, and the key lists read in its code at 000c2d4):

- a session (open answer, close answer, list item): 27 keys; ``GET /cash-sessions/{id}`` adds ``sales``,
  ``operator_name`` and ``site_name``. Amounts are the real one's float columns, accumulated sale by sale,
  so they carry float artefacts (``variance`` −44.999999999999986, ``total_weight_out`` 70.85000000000001);
- a sale inside a session: 12 keys, with ``operator_name``, ``total_weight``, ``lifecycle_status``, and no
  ``cash_session_id`` nor items; ``GET /sales/{id}`` and ``POST /sales/`` give the whole sale with items
  and payments (an idempotent replay lacks four keys: see ``REPLAY_DROPPED_KEYS``);
- datetimes as pydantic writes them: ``2026-11-29T17:04:17Z``.

Legacy 1.3: the facts are silent on its read-back shapes; the stand-in keeps the simple ones it always had
(15 session keys, sales with ``cash_session_id``, ``+00:00`` datetimes).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from receiver.dev.recyclic_store import CashSession, RecyclicStore, Sale

#: The register options of a register with no workflow option set (observed on the lab: ``{"features": {}}``).
REGISTER_OPTIONS: dict[str, Any] = {"features": {}}
#: v2 builds report links for the browser, behind the production proxy, whatever the backend's own prefix.
BROWSER_API_PREFIX = "/api/v1"


def _euros(amount: int | None) -> float | None:
    return None if amount is None else amount / 100


def _iso(moment) -> str | None:
    return None if moment is None else moment.isoformat()


def _iso_z(moment: datetime | None) -> str | None:
    """How v2 (pydantic 2) writes an aware UTC datetime: ``2026-11-29T17:04:17Z`` (observed, probe P1)."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def session_view(store: "RecyclicStore", session: "CashSession", *, detail: bool = False,
                 close_answer: bool = False, number_of_sales: bool = False) -> dict[str, Any]:
    sales = [store.sales[sale_id] for sale_id in session.sale_ids]
    if store.profile == "legacy":
        return _legacy_session(session, sales)
    closed = session.status != "open"
    weight_out = float(sum(sale.total_weight() for sale in sales))
    body: dict[str, Any] = {
        "operator_id": session.operator_id, "site_id": session.site_id, "register_id": session.register_id,
        "initial_amount": session.initial_amount / 100, "id": session.id,
        "current_amount": session.current_amount_f, "status": session.status,
        "opened_at": _iso_z(session.opened_at), "closed_at": _iso_z(session.closed_at),
        "total_sales": session.total_sales_f, "total_items": len(sales),
        # only the listing counts the sales (read in v2's code; facts: "listed ... with number_of_sales")
        "number_of_sales": len(sales) if number_of_sales else None,
        "total_donations": session.total_donations_f, "total_weight_out": weight_out,
        "closing_amount": session.closing_amount_f, "actual_amount": _euros(session.actual_amount),
        "variance": session.variance_f, "variance_comment": session.variance_comment,
        "report_download_url": None, "report_email_sent": None,
        "register_options": REGISTER_OPTIONS,
        "totals": {"sales_completed": session.total_sales_f, "refunds": 0.0, "net": session.total_sales_f},
        "paheko_sync_correlation_id": None, "paheko_outbox_item_id": None,
        "accounting_config_revision_id": session.accounting_config_revision_id,
        "accounting_close_snapshot": session.accounting_close_snapshot,
        "closing_preview_theoretical_amount": None if closed else store.theoretical(session),
    }
    if close_answer:
        body.update(
            report_download_url=(f"{BROWSER_API_PREFIX}/admin/reports/cash-sessions/{session.report_name}"
                                 f"?token={session.report_token}") if session.report_name else None,
            report_email_sent=False,
            paheko_sync_correlation_id=session.correlation_id, paheko_outbox_item_id=session.outbox_item_id)
    if detail:
        operator = store.users.get(session.operator_id)
        site = next((s for s in store.sites if s.id == session.site_id), None)
        body.update(sales=[_sale_in_session(store, sale) for sale in sales],
                    operator_name=operator.username if operator else None, site_name=site.name if site else None)
    return body


def _sale_in_session(store: "RecyclicStore", sale: "Sale") -> dict[str, Any]:
    operator = store.users.get(sale.operator_id)
    return {"id": sale.id, "total_amount": sale.total_amount / 100, "donation": sale.donation / 100,
            "payment_method": sale.payment_method, "payments": _payments(sale),
            "sale_date": _iso_z(sale.sale_date), "created_at": _iso_z(sale.created_at),
            "operator_id": sale.operator_id, "operator_name": operator.username if operator else None,
            "note": sale.note, "total_weight": sale.total_weight(), "lifecycle_status": "completed"}


def _payments(sale: "Sale") -> list[dict[str, Any]]:
    """Payment rows as observed on the lab: ``payment_method`` is the legacy aggregated column (a transfer reads
    "card"), ``payment_method_code`` the code sent, ``created_at`` the server clock when written."""
    from receiver.dev.recyclic_store import LEGACY_PAYMENT_COLUMN, PAYMENT_METHOD_IDS

    return [{"payment_method": LEGACY_PAYMENT_COLUMN.get(code, code), "amount": amount / 100, "id": payment_id,
             "sale_id": sale.id, "payment_method_id": PAYMENT_METHOD_IDS.get(code), "payment_method_code": code,
             "nature": "sale_payment", "direction": "inflow", "original_sale_id": None,
             "original_payment_method_id": None, "is_prior_year_special_case": False,
             "paheko_account_override": None, "notes": None, "created_at": _iso_z(sale.recorded_at or sale.created_at)}
            for (code, amount), payment_id in zip(sale.payments, sale.payment_ids)]


def sale_view(store: "RecyclicStore", sale: "Sale") -> dict[str, Any]:
    """``POST /sales/`` and ``GET /sales/{id}``: the whole sale, items and payments."""
    if store.profile == "legacy":
        return _legacy_sale(sale, with_items=True)
    year = sale.created_at.year
    return {
        "cash_session_id": sale.cash_session_id, "total_amount": sale.total_amount / 100,
        "donation": sale.donation / 100, "payment_method": sale.payment_method, "note": sale.note,
        "id": sale.id, "operator_id": sale.operator_id, "lifecycle_status": "completed",
        "sale_date": _iso_z(sale.sale_date), "created_at": _iso_z(sale.created_at),
        "updated_at": _iso_z(sale.created_at),
        "items": [{"category": line.category, "quantity": line.quantity, "weight": line.weight_kg,
                   "unit_price": line.unit_price / 100, "total_price": line.total_price / 100, "preset_id": None,
                   "notes": line.notes, "business_tag_kind": None, "business_tag_custom": None, "id": line.id,
                   "sale_id": sale.id, "effective_business_tag": None} for line in sale.items],
        "payments": _payments(sale),
        "special_encaissement_kind": None, "social_action_kind": None, "adherent_reference": None,
        "business_tag_kind": None, "business_tag_custom": None, "effective_business_tag": None,
        "fiscal_branch": "current", "sale_fiscal_year": year, "current_open_fiscal_year": year,
    }


def _legacy_sale(sale: "Sale", *, with_items: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": sale.id, "cash_session_id": sale.cash_session_id, "operator_id": sale.operator_id,
        "total_amount": sale.total_amount / 100, "donation": sale.donation / 100,
        "payment_method": sale.payment_method, "payments": [], "note": None,
        "sale_date": _iso(sale.sale_date), "created_at": _iso(sale.created_at)}
    if with_items:
        data["items"] = [{"id": line.id, "sale_id": sale.id, "category": line.category, "quantity": line.quantity,
                          "weight": line.weight_g / 1000, "unit_price": line.unit_price / 100,
                          "total_price": line.total_price / 100, "notes": line.notes} for line in sale.items]
    return data


def _legacy_session(session: "CashSession", sales: list["Sale"]) -> dict[str, Any]:
    body = {
        "id": session.id, "operator_id": session.operator_id, "site_id": session.site_id,
        "register_id": session.register_id, "initial_amount": session.initial_amount / 100,
        "status": session.status, "opened_at": _iso(session.opened_at), "closed_at": _iso(session.closed_at),
        "total_sales": sum(s.total_amount - s.donation for s in sales) / 100, "total_items": len(sales),
        "total_weight_out": sum(line.weight_g for s in sales for line in s.items) / 1000,
        "actual_amount": _euros(session.actual_amount), "variance": _euros(session.variance),
        "variance_comment": session.variance_comment,
        "sales": [_legacy_sale(sale, with_items=False) for sale in sales],
    }
    return body


def outbox_json(item, *, detail: bool = False) -> dict[str, Any]:
    """A ``paheko_outbox_items`` row as v2's admin routes list it (key list read in v2's code at 000c2d4;
    the observed part: ``operation_type``, ``outbox_status``, ``sync_state_core`` and their transitions)."""
    body: dict[str, Any] = {
        "id": item.id, "operation_type": "cash_session_close",
        "idempotency_key": f"cash_session_close:{item.cash_session_id}", "cash_session_id": item.cash_session_id,
        "site_id": item.site_id, "outbox_status": item.outbox_status, "sync_state_core": item.sync_state_core,
        "local_session_persisted": True, "remote_attempt_count": 0, "last_remote_http_status": None,
        "last_error": None, "next_retry_at": None, "rejection_reason": item.rejection_reason,
        "mapping_resolution_error": None, "root_cause_domain": "none", "root_cause_code": "none",
        "root_cause_message": None, "correlation_id": item.correlation_id,
        "created_at": _iso_z(item.created_at), "updated_at": _iso_z(item.updated_at),
        "transaction_preview": None, "close_batch_state": None,
    }
    if detail:
        body.update(payload=item.payload, last_response_snippet=None,
                    recent_sync_transitions=list(reversed(item.transitions))[:10])
    return body
