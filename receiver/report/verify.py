"""``report --verify``: read the period's sessions and sales back through Recyclic's API and compare them with
what the ledger says was forwarded. Every difference is a finding (French, for the person signing the month).

Read-only: ``GET cash-sessions/{id}`` (the session, its status and all its sales) and ``GET sales/{id}`` (lines
and payments) per forwarded sale. Recyclic answers floats (``70.85000000000001`` kg): they are rounded to the
gram and the cent before comparing, which is exact for what the forwarder sent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from receiver.report.reconcile import LedgerSession, euros, kilos
from receiver.sinks.recyclic.profiles import cents, grams


def cents_of(value: float | int | str | None) -> int:
    """Recyclic's euros (or nothing) in cents, rounded as the forwarder rounds."""
    return cents(value or 0)


def grams_of(value: float | int | str | None) -> int:
    """Recyclic's kilograms (or nothing) in grams, rounded as the forwarder rounds."""
    return grams(value or 0)


@dataclass
class Verification:
    sessions: int = 0
    sales: int = 0
    requests: int = 0
    findings: list[str] = field(default_factory=list)


def _status(exc: Exception) -> int | None:
    return getattr(exc, "status", None)


def verify(sessions: Iterable[LedgerSession], get: Callable[[str], Any],
           progress: Callable[[int], None] | None = None) -> Verification:
    """Compare each forwarded session and sale with Recyclic (``get(path)`` returns the decoded JSON, or raises
    an exception whose ``status`` is the HTTP status)."""
    out = Verification()
    for s in sessions:
        record = s.forwards.get(("session", s.session_id))
        if s.mapped is None or record is None or record[0] != "done" or not record[1]:
            if progress:
                progress(1)
            continue
        _verify_session(s, record[1], get, out)
        if progress:
            progress(1)
    return out


def _get(get: Callable[[str], Any], path: str, out: Verification) -> Any | None:
    out.requests += 1
    try:
        return get(path)
    except Exception as exc:  # noqa: BLE001 — a 404 is a finding (the object is gone); anything else stops the check
        if _status(exc) == 404:
            return None
        raise


def _verify_session(s: LedgerSession, recyclic_id: str, get: Callable[[str], Any], out: Verification) -> None:
    where = f"Session Paheko {s.session_id} (Recyclic {recyclic_id})"
    body = _get(get, f"cash-sessions/{recyclic_id}", out)
    out.sessions += 1
    sent = {tab: rec[1] for (kind, tab), rec in s.forwards.items() if kind == "sale" and rec[0] == "done"}
    if body is None:
        out.findings.append(f"{where} : introuvable dans Recyclic, alors que le registre l'y a transmise "
                            f"avec {len(sent)} vente(s).")
        return
    closed_in_ledger = s.forwards.get(("close", s.session_id), ("",))[0] == "done"
    status = str(body.get("status") or "").lower()
    if closed_in_ledger and status != "closed":
        out.findings.append(f"{where} : fermée selon le registre, mais « {status} » dans Recyclic.")
    elif not closed_in_ledger and status == "closed":
        out.findings.append(f"{where} : fermée dans Recyclic, alors que le registre n'a pas enregistré sa clôture.")
    remote = {str(sale["id"]): sale for sale in body.get("sales") or []}
    expected = {str(sale_id): tab for tab, sale_id in sent.items() if sale_id}
    for sale_id, tab in sorted(expected.items(), key=lambda kv: kv[1]):
        if sale_id not in remote:
            out.findings.append(f"{where} : la vente du ticket {tab} ({sale_id}) n'est pas dans cette session "
                                "Recyclic.")
    notes = Counter(sale.get("note") for sale in remote.values())
    for sale_id, sale in remote.items():
        if sale_id not in expected:
            note = sale.get("note") or "sans note"
            twice = " (en double : même note qu'une vente transmise)" if notes[sale.get("note")] > 1 else ""
            out.findings.append(f"{where} : vente {sale_id} « {note} » ({euros(cents_of(sale.get('total_amount')))}) "
                                f"présente dans Recyclic mais pas dans le registre{twice}.")
    by_tab = {sale["tab_id"]: sale for sale in s.mapped.get("sales", ())}
    for sale_id, tab in sorted(expected.items(), key=lambda kv: kv[1]):
        mapped = by_tab.get(tab)
        if mapped is None or sale_id not in remote:
            continue
        detail = _get(get, f"sales/{sale_id}", out)
        out.sales += 1
        if detail is None:
            out.findings.append(f"{where} : la vente du ticket {tab} ({sale_id}) est introuvable dans Recyclic.")
            continue
        _compare_sale(f"{where}, ticket {tab}", mapped, detail, out)


def _compare_sale(where: str, mapped: dict, detail: dict, out: Verification) -> None:
    lines = detail.get("items") or []
    want_cents = sum(line["total_cents"] for line in mapped["items"])
    want_grams = sum(line["weight_grams"] for line in mapped["items"])
    got_cents = sum(cents_of(line.get("total_price")) for line in lines)
    got_grams = sum(grams_of(line.get("weight")) for line in lines)
    if cents_of(detail.get("total_amount")) != mapped["total_cents"]:
        out.findings.append(f"{where} : total {euros(cents_of(detail.get('total_amount')))} dans Recyclic, "
                            f"{euros(mapped['total_cents'])} transmis.")
    if got_cents != want_cents:
        out.findings.append(f"{where} : lignes pour {euros(got_cents)} dans Recyclic, {euros(want_cents)} transmis.")
    if got_grams != want_grams:
        out.findings.append(f"{where} : {kilos(got_grams)} dans Recyclic, {kilos(want_grams)} transmis.")
    want_lines = Counter((line["category_id"], line["quantity"], line["weight_grams"], line["total_cents"])
                         for line in mapped["items"])
    got_lines = Counter((str(line.get("category")), line.get("quantity"), grams_of(line.get("weight")),
                         cents_of(line.get("total_price"))) for line in lines)
    if want_lines != got_lines and got_cents == want_cents and got_grams == want_grams:
        out.findings.append(f"{where} : lignes différentes de celles transmises (catégorie ou quantité).")
    payments = detail.get("payments") or []
    if payments:
        got = Counter()
        for payment in payments:
            # v2: the code sent is payment_method_code; payment_method is an old enum (transfer reads "card")
            got[str(payment.get("payment_method_code") or payment.get("payment_method")).lower()] += \
                cents_of(payment.get("amount"))
    else:  # Recyclic 1.3: one method per sale, no payment rows
        got = Counter({str(detail.get("payment_method") or "").lower(): cents_of(detail.get("total_amount"))})
    want = Counter()
    for payment in mapped["payments"]:
        want[payment["code"].lower()] += payment["amount_cents"]
    if +got != +want:
        show = lambda c: ", ".join(f"{k} {euros(v)}" for k, v in sorted(c.items()) if v) or "aucun"  # noqa: E731
        out.findings.append(f"{where} : paiements {show(got)} dans Recyclic, {show(want)} transmis.")


def sweep(sessions: list[LedgerSession], source: str, since: date, until: date, zone: tzinfo,
          list_sessions: Callable[..., list[dict]], get: Callable[[str], Any], out: Verification) -> None:
    """Recyclic sessions opened in the period at the period's sites that the ledger did not forward, but whose
    sales carry this source's notes: a Paheko ticket held twice by Recyclic, or sent by another ledger."""
    from receiver.sinks.recyclic.profiles import parse_sale_note

    known = {rec[1] for s in sessions for (kind, _), rec in s.forwards.items() if kind == "session" and rec[1]}
    sites = sorted({s.mapped["opening"]["site_id"] for s in sessions if s.mapped and s.mapped.get("opening")})
    start = datetime.combine(since, time(0), zone).astimezone(UTC).isoformat()
    end = datetime.combine(until + timedelta(days=1), time(0), zone).astimezone(UTC).isoformat()
    for site in sites:
        out.requests += 1
        for row in list_sessions(site_id=site, date_from=start, date_to=end):
            if row["id"] in known or row.get("number_of_sales") == 0:
                continue
            detail = _get(get, f"cash-sessions/{row['id']}", out)
            notes = [parse_sale_note(sale.get("note")) for sale in (detail or {}).get("sales") or []]
            paheko = sorted({n[1] for n in notes if n is not None and n[0] == source})
            if paheko:
                count = sum(1 for n in notes if n is not None and n[0] == source)
                out.findings.append(
                    f"Session Recyclic {row['id']} : {count} vente(s) de la source « {source} » (session(s) Paheko "
                    f"{', '.join(map(str, paheko))}) que le registre n'y a pas transmises : doublon possible, "
                    "à vérifier dans Recyclic.")
