"""``GET|POST /api/paheko/caisse/v1/report?month=2025-09``: the month view of the Paheko module.

Authenticated like the module's other routes (the blueprint's check), and scoped to the calling source: a
Paheko only ever sees its own sessions. One call answers the one-line verdict and the per-category table,
every label in French and every figure twice — exact integers (cents, grams) and the French display text —
so the module only lays it out. Read from the ledger only: it never calls Paheko or Recyclic.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from flask import g, jsonify, request

from receiver.intake.routes import error, route
from receiver.report.ledger import load_sessions
from receiver.report.reconcile import (GROUP_LABELS, GROUPS, Figures, Report, Row, euros, kilos, month_last_day,
                                       reconcile)
from receiver.services import services

#: The table's columns, in order, with the heading the module shows.
COLUMNS = (
    ("categorie", "Catégorie Paheko"),
    ("articles", "Articles"),
    ("kg_paheko", "Poids Paheko"),
    ("kg_recyclic", "Poids dans Recyclic"),
    ("euros_paheko", "Ventes Paheko"),
    ("euros_recyclic", "Dans Recyclic"),
    ("euros_ecarte", "Écarté volontairement"),
    ("euros_en_attente", "Pas encore transmis"),
)
BAD_MONTH = "Paramètre « month » invalide : un mois au format AAAA-MM est attendu (par exemple 2025-09)."


def _figures(f: Figures) -> dict:
    return {"articles": f.items, "grammes": f.grams, "centimes": f.cents, "kg": kilos(f.grams),
            "euros": euros(f.cents)}


def _row(row: Row, *, total: bool = False) -> dict:
    unsent = row.unsent
    left = row.left_out_total
    return {
        "categorie": row.label,
        "est_total": total,
        "categories_recyclic": sorted(row.targets),  # Recyclic category ids its forwarded lines went to
        "articles": str(row.paheko.items),
        "kg_paheko": kilos(row.paheko.grams),
        "kg_recyclic": kilos(row.forwarded.grams),
        "euros_paheko": euros(row.paheko.cents),
        "euros_recyclic": euros(row.forwarded.cents),
        "euros_ecarte": euros(left.cents) if left else "—",
        "euros_en_attente": euros(unsent.cents) if unsent else "—",
        "chiffres": {
            "paheko": _figures(row.paheko), "recyclic": _figures(row.forwarded), "ecarte": _figures(left),
            "bloque": _figures(row.held), "en_attente": _figures(row.pending),
            "ecarte_par_raison": {GROUP_LABELS[g]: _figures(row.left_out[g]) for g in GROUPS if row.left_out[g]},
        },
    }


def report_view(report: Report) -> dict:
    before = report.since - timedelta(days=1)
    after = report.until + timedelta(days=1)
    return {
        "source": report.source,
        "periode": {"debut": report.since.isoformat(), "fin": report.until.isoformat(),
                    "libelle": report.period_label},
        # for the module's links (Brindille has no date arithmetic)
        "mois_precedent": f"{before.year:04d}-{before.month:02d}",
        "mois_suivant": f"{after.year:04d}-{after.month:02d}",
        "verdict": report.verdict,
        "tout_est_dans_recyclic": report.complete,
        "ton": "ok" if report.complete else "check" if report.balanced else "error",
        "colonnes": [{"cle": key, "libelle": label} for key, label in COLUMNS],
        "categories": [_row(row) for row in report.categories],
        "total": _row(report.total, total=True),
        "sessions": len(report.sessions),
        "sessions_a_surveiller": [
            {"session": s.session_id, "jour": s.day.isoformat() if s.day else None, "paheko": s.paheko,
             "recyclic": s.recyclic, "euros": euros(s.cents) if s.cents is not None else None}
            for s in report.attention
        ],
    }


def _month(raw: object, today: date) -> tuple[date, date] | None:
    if raw in (None, ""):
        first = today.replace(day=1)
    else:
        try:
            first = datetime.strptime(str(raw).strip(), "%Y-%m").date()
        except ValueError:
            return None
        if first.year < 2000:
            return None
    return first, month_last_day(first)


@route("v1/report", methods=["GET", "POST"])
def month_report():
    """The month's verdict and per-category table for the calling source (``month=AAAA-MM``; default: now)."""
    raw = request.args.get("month")
    if raw is None and request.method == "POST" and request.is_json:
        body = request.get_json(silent=True)
        raw = body.get("month") if isinstance(body, dict) else None
    svc = services()
    source = g.source
    bounds = _month(raw, datetime.now(source.timezone).date())
    if bounds is None:
        return error(400, BAD_MONTH)
    sessions = load_sessions(svc.ledger, source.name, *bounds, source.timezone)
    return jsonify(report_view(reconcile(source.name, sessions, *bounds)))
