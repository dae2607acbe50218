"""The report for a terminal (aligned table) and for a spreadsheet (CSV in integer cents and grams).

Words are French: the report is what the shop signs off at the end of the month.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from receiver.report.reconcile import GROUP_LABELS, GROUPS, Figures, Report, Row, euros, kilos

SHORT_GROUPS = {
    "refunds": "rembours.",
    "membership": "cotis.",
    "debt_wallet": "ardoise",
    "unmapped": "sans corresp.",
    "other": "autres",
}


def target_names(row: Row, names: dict[str, str]) -> str:
    """Where the row's forwarded parts went in Recyclic: category names when known, else short ids."""
    shown = sorted(names.get(t) or (t[:8] + "…" if len(t) > 12 else t) for t in row.targets)
    return ", ".join(shown) if shown else "—"


def present_groups(report: Report) -> list[str]:
    """The left-out groups with anything in them this period (the tables show only those)."""
    return [g for g in GROUPS if report.total.left_out[g] or report.payments_total.left_out[g]]


def _table(headers: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _amount(figures: Figures) -> str:
    return euros(figures.cents) if figures else "—"


def _weight(figures: Figures) -> str:
    return kilos(figures.grams) if figures.grams else "—"


def category_lines(report: Report, rows: Iterable[Row], *, with_day: bool = False) -> list[list[str]]:
    out = []
    for row in rows:
        cells = [f"{row.day:%d/%m}"] if with_day else []
        cells += [
            row.label, "" if row is report.total else target_names(row, report.category_names), str(row.paheko.items),
            _weight(row.paheko), _weight(row.forwarded), _amount(row.paheko), _amount(row.forwarded),
            _amount(row.left_out_total), _amount(row.held), _amount(row.pending),
        ]
        if not report.balanced:
            cells.append(_amount(row.gap))
        out.append(cells)
    return out


def render_text(report: Report) -> str:
    """The whole report as aligned text for a terminal."""
    out = [report.verdict, ""]
    gap = [] if report.balanced else ["écart"]
    out.append(f"Par catégorie — source « {report.source} », {report.period_label}")
    out += _table(
        ["Catégorie Paheko", "→ Recyclic", "articles", "kg Paheko", "kg Recyclic", "€ Paheko", "€ Recyclic",
         "€ écarté", "€ bloqué", "€ en attente", *gap],
        category_lines(report, [*report.categories, report.total]), {2, 3, 4, 5, 6, 7, 8, 9, 10})
    out += ["", "Par moyen de paiement"]
    groups = present_groups(report)
    method_rows = []
    for row in [*report.methods, report.payments_total]:
        targets = "" if row is report.payments_total else ", ".join(sorted(row.targets)) or "—"
        method_rows.append([row.label, targets, _amount(row.paheko),
                            _amount(row.forwarded), *(_amount(row.left_out[g]) for g in groups),
                            _amount(row.held), _amount(row.pending), *([_amount(row.gap)] if gap else [])])
    out += _table(["Moyen Paheko", "→ Recyclic", "€ Paheko", "€ Recyclic",
                   *(f"€ {SHORT_GROUPS[g]}" for g in groups), "€ bloqué", "€ en attente", *gap],
                  method_rows, set(range(2, 12)))
    out += ["", "Par jour"]
    day_rows = [[f"{row.day:%d/%m/%Y}", str(row.paheko.items), _weight(row.paheko), _weight(row.forwarded),
                 _amount(row.paheko), _amount(row.forwarded), _amount(row.left_out_total), _amount(row.unsent)]
                for row in report.days]
    out += _table(["Jour", "articles", "kg Paheko", "kg Recyclic", "€ Paheko", "€ Recyclic", "€ écarté",
                   "€ pas encore transmis"], day_rows, set(range(1, 8)))
    left = [[GROUP_LABELS[g], str(report.total.left_out[g].items), _weight(report.total.left_out[g]),
             _amount(report.total.left_out[g]), _amount(report.payments_total.left_out[g])]
            for g in GROUPS if report.total.left_out[g] or report.payments_total.left_out[g]]
    if left:
        out += ["", "Écarté volontairement, par raison"]
        out += _table(["Raison", "articles", "kg", "€ (lignes)", "€ (paiements)"], left, {1, 2, 3, 4})
    attention = report.attention
    out += ["", f"Sessions à surveiller : {len(attention)} sur {len(report.sessions)}"]
    if attention:
        out += _table(["Session", "Jour", "Paheko", "Recyclic", "€ Paheko", "Raison"],
                      [[str(s.session_id), f"{s.day:%d/%m}" if s.day else "?", s.paheko, s.recyclic,
                        euros(s.cents) if s.cents is not None else "?", (s.reason or "")[:90]]
                       for s in attention], {0, 4})
    if report.findings:
        out += ["", f"Constats ({len(report.findings)})"]
        out += [f"  - {finding}" for finding in report.findings]
    return "\n".join(out) + "\n"


CSV_MEASURES = ("items", "grams", "cents")


def csv_header() -> list[str]:
    columns = ["section", "day", "paheko", "recyclic"]
    buckets = ["paheko", "forwarded", *(f"left_out_{g}" for g in GROUPS), "held", "pending", "gap"]
    return columns + [f"{b}_{m}" for b in buckets for m in CSV_MEASURES]


def _csv_row(section: str, row: Row, report: Report) -> list[object]:
    figures = [row.paheko, row.forwarded, *(row.left_out[g] for g in GROUPS), row.held, row.pending, row.gap]
    targets = "; ".join(sorted(report.category_names.get(t, t) for t in row.targets))
    return [section, row.day.isoformat() if row.day else "", row.label, targets,
            *(getattr(f, m) for f in figures for m in CSV_MEASURES)]


def render_csv(report: Report) -> str:
    """Every row of the report, integer articles, grams and cents (exact; a spreadsheet divides)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(csv_header())
    for section, rows in (("category", report.categories), ("category_total", [report.total]),
                          ("method", report.methods), ("method_total", [report.payments_total]),
                          ("day", report.days), ("category_day", report.category_days),
                          ("method_day", report.method_days)):
        for row in rows:
            writer.writerow(_csv_row(section, row, report))
    return buffer.getvalue()
