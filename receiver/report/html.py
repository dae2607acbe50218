"""The report as one self-contained HTML page: the verdict, two charts (kg per category, Paheko vs Recyclic;
€ per day, Paheko vs Recyclic) drawn as inline SVG, and the tables. No script, no external asset: the page's
own Content-Security-Policy forbids loading anything, so it opens the same from a mail or a USB stick.
"""

from __future__ import annotations

from html import escape

from receiver.report.reconcile import GROUP_LABELS, Report, euros, kilos
from receiver.report.render import present_groups, target_names

PAHEKO_COLOUR = "#5b7db1"
RECYCLIC_COLOUR = "#2e9e5b"
CSP = "default-src 'none'; style-src 'unsafe-inline'"

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1100px;
 color:#1d232a;padding:0 1rem}
h1{font-size:1.35rem;margin:.2rem 0 1rem}
h2{font-size:1.1rem;margin:2rem 0 .6rem}
.verdict{padding:.8rem 1rem;border-radius:6px;font-size:1.1rem;font-weight:600}
.ok{background:#e4f4ea;border-left:6px solid #2e9e5b}
.todo{background:#fff3dc;border-left:6px solid #d98b00}
table{border-collapse:collapse;width:100%;font-size:.88rem}
th,td{padding:.3rem .5rem;border-bottom:1px solid #dde2e8;text-align:left;vertical-align:top}
th{background:#f2f4f7;font-weight:600}
td.n,th.n{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
tr.total td{font-weight:700;border-top:2px solid #1d232a}
.legend span{display:inline-block;width:.9rem;height:.9rem;margin:0 .3rem 0 1rem;vertical-align:middle}
figure{margin:0 0 1rem}
figcaption{font-size:.9rem;color:#4a5561;margin-bottom:.3rem}
.meta{color:#4a5561;font-size:.85rem}
"""


def _svg_text(x: float, y: float, text: str, *, anchor: str = "start", size: int = 12, weight: str = "normal",
              fill: str = "#1d232a") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" font-weight="{weight}" '
            f'fill="{fill}">{escape(text)}</text>')


def _bar(x: float, y: float, width: float, height: float, colour: str, title: str) -> str:
    return (f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(width, 0):.1f}" height="{height:.1f}" fill="{colour}">'
            f"<title>{escape(title)}</title></rect>")


def kg_chart(report: Report, width: int = 1000) -> str:
    """Horizontal bars: per Paheko category, kg in Paheko and kg in Recyclic."""
    rows = [r for r in report.categories if r.paheko.grams or r.forwarded.grams]
    label_w, value_w, bar_h, gap = 230, 110, 11, 10
    height = 30 + len(rows) * (2 * bar_h + gap) + 10
    top = max([r.paheko.grams for r in rows] + [r.forwarded.grams for r in rows] + [1])
    scale = (width - label_w - value_w) / top
    parts = [f'<svg id="chart-kg" xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" aria-label="Kilogrammes par catégorie, Paheko et Recyclic">',
             f'<rect width="{width}" height="{height}" fill="#ffffff"/>']
    y = 24
    if not rows:
        parts.append(_svg_text(10, 20, "Aucun poids enregistré sur la période."))
    for row in rows:
        parts.append(_svg_text(label_w - 8, y + bar_h + 4, row.label[:34], anchor="end"))
        for offset, grams, colour, who in ((0, row.paheko.grams, PAHEKO_COLOUR, "Paheko"),
                                           (bar_h, row.forwarded.grams, RECYCLIC_COLOUR, "Recyclic")):
            w = max(grams, 0) * scale
            parts.append(_bar(label_w, y + offset, w, bar_h - 1, colour, f"{row.label} — {who} : {kilos(grams)}"))
            parts.append(_svg_text(label_w + w + 4, y + offset + bar_h - 2, kilos(grams), size=10, fill="#4a5561"))
        y += 2 * bar_h + gap
    parts.append("</svg>")
    return "".join(parts)


def nice_step(top: int) -> int:
    """A round grid step (1, 2 or 5 × a power of ten, in cents) giving at most 5 lines up to ``top``."""
    magnitude = 1
    while True:
        for factor in (1, 2, 5):
            if top / (factor * magnitude) <= 5:
                return factor * magnitude
        magnitude *= 10


def euro_chart(report: Report, width: int = 1000, height: int = 280) -> str:
    """Vertical bars: per day, € in Paheko and € in Recyclic."""
    days = report.days
    left, bottom, top_pad = 70, 40, 16
    plot_h = height - bottom - top_pad
    top = max([d.paheko.cents for d in days] + [d.forwarded.cents for d in days] + [1])
    scale = plot_h / top
    slot = (width - left - 10) / max(len(days), 1)
    bar_w = max(min(slot / 2 - 2, 22), 1.5)
    parts = [f'<svg id="chart-euros" xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" aria-label="Euros par jour, Paheko et Recyclic">',
             f'<rect width="{width}" height="{height}" fill="#ffffff"/>']
    base = top_pad + plot_h
    step = nice_step(top)
    for value in range(0, top + 1, step):
        y = base - value * scale
        parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#dde2e8"/>')
        parts.append(_svg_text(left - 6, y + 4, euros(value), anchor="end", size=10, fill="#4a5561"))
    if not days:
        parts.append(_svg_text(left + 10, top_pad + 20, "Aucune vente sur la période."))
    every = max(1, len(days) // 16)
    for index, day in enumerate(days):
        x = left + index * slot + slot / 2 - bar_w
        for offset, cents, colour, who in ((0, day.paheko.cents, PAHEKO_COLOUR, "Paheko"),
                                           (bar_w, day.forwarded.cents, RECYCLIC_COLOUR, "Recyclic")):
            h = max(cents, 0) * scale
            parts.append(_bar(x + offset, base - h, bar_w - 1, h, colour,
                              f"{day.day:%d/%m/%Y} — {who} : {euros(cents)}"))
        if index % every == 0:
            parts.append(_svg_text(x + bar_w, base + 14, f"{day.day:%d/%m}", anchor="middle", size=10))
    parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{base}" y2="{base}" stroke="#1d232a"/>')
    parts.append("</svg>")
    return "".join(parts)


def _cells(values: list[str], numeric_from: int) -> str:
    return "".join(f'<td class="n">{escape(v)}</td>' if i >= numeric_from else f"<td>{escape(v)}</td>"
                   for i, v in enumerate(values))


def _head(names: list[str], numeric_from: int) -> str:
    return "<tr>" + "".join(f'<th class="n">{escape(n)}</th>' if i >= numeric_from else f"<th>{escape(n)}</th>"
                            for i, n in enumerate(names)) + "</tr>"


def _money(cents: int) -> str:
    return euros(cents) if cents else "—"


def _category_table(report: Report) -> str:
    names = ["Catégorie Paheko", "→ Recyclic", "articles", "kg Paheko", "kg Recyclic", "€ Paheko", "€ Recyclic",
             "€ écarté", "€ bloqué", "€ en attente"] + ([] if report.balanced else ["écart"])
    out = ["<table>", _head(names, 2)]
    for row in [*report.categories, report.total]:
        values = [row.label, "" if row is report.total else target_names(row, report.category_names),
                  str(row.paheko.items),
                  kilos(row.paheko.grams), kilos(row.forwarded.grams), euros(row.paheko.cents),
                  euros(row.forwarded.cents), _money(row.left_out_total.cents), _money(row.held.cents),
                  _money(row.pending.cents)] + ([] if report.balanced else [_money(row.gap.cents)])
        css = ' class="total"' if row is report.total else ""
        out.append(f"<tr{css}>{_cells(values, 2)}</tr>")
    out.append("</table>")
    return "".join(out)


def _method_table(report: Report) -> str:
    groups = present_groups(report)
    names = ["Moyen de paiement Paheko", "→ Recyclic", "€ Paheko", "€ Recyclic",
             *(f"€ écarté : {GROUP_LABELS[g]}" for g in groups), "€ bloqué", "€ en attente"]
    out = ["<table>", _head(names, 2)]
    for row in [*report.methods, report.payments_total]:
        values = [row.label, "" if row is report.payments_total else ", ".join(sorted(row.targets)) or "—",
                  euros(row.paheko.cents),
                  euros(row.forwarded.cents), *(_money(row.left_out[g].cents) for g in groups),
                  _money(row.held.cents), _money(row.pending.cents)]
        css = ' class="total"' if row is report.payments_total else ""
        out.append(f"<tr{css}>{_cells(values, 2)}</tr>")
    out.append("</table>")
    return "".join(out)


def _day_table(report: Report) -> str:
    out = ["<table>", _head(["Jour", "articles", "kg Paheko", "kg Recyclic", "€ Paheko", "€ Recyclic", "€ écarté",
                              "€ pas encore transmis"], 1)]
    for row in report.days:
        values = [f"{row.day:%d/%m/%Y}", str(row.paheko.items), kilos(row.paheko.grams), kilos(row.forwarded.grams),
                  euros(row.paheko.cents), euros(row.forwarded.cents), _money(row.left_out_total.cents),
                  _money(row.unsent.cents)]
        out.append(f"<tr>{_cells(values, 1)}</tr>")
    out.append("</table>")
    return "".join(out)


def _sessions(report: Report) -> str:
    attention = report.attention
    if not attention:
        return f"<p>Aucune : les {len(report.sessions)} sessions de la période sont fermées dans Paheko et dans Recyclic.</p>"
    out = ["<table>", _head(["Session", "Jour", "Paheko", "Recyclic", "€ Paheko", "Raison"], 99)]
    for s in attention:
        out.append("<tr>" + _cells([str(s.session_id), f"{s.day:%d/%m/%Y}" if s.day else "?", s.paheko, s.recyclic,
                                    euros(s.cents) if s.cents is not None else "?", s.reason or ""], 99) + "</tr>")
    out.append("</table>")
    return "".join(out)


def render_html(report: Report, *, generated: str = "") -> str:
    verdict_class = "ok" if report.complete else "todo"
    findings = ""
    if report.findings:
        findings = (f"<h2>Constats ({len(report.findings)})</h2><ul>"
                    + "".join(f"<li>{escape(f)}</li>" for f in report.findings) + "</ul>")
    legend = (f'<p class="legend"><span style="background:{PAHEKO_COLOUR}"></span>Paheko'
              f'<span style="background:{RECYCLIC_COLOUR}"></span>Recyclic</p>')
    return f"""<!doctype html>
<html lang="fr">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(report.period_label)} — rapprochement Paheko / Recyclic ({escape(report.source)})</title>
<style>{STYLE}</style>
</head>
<body>
<h1>Rapprochement Paheko → Recyclic — {escape(report.period_label)}, source « {escape(report.source)} »</h1>
<p class="verdict {verdict_class}" id="verdict">{escape(report.verdict)}</p>
<p class="meta">{len(report.sessions)} session(s) ; poids et montants exacts au gramme et au centime.
{escape(generated)}</p>
<h2>Kilogrammes par catégorie</h2>
<figure><figcaption>Poids vendu dans Paheko et poids reçu par Recyclic, par catégorie Paheko.</figcaption>
{legend}{kg_chart(report)}</figure>
<h2>Euros par jour</h2>
<figure><figcaption>Ventes du jour dans Paheko et montant reçu par Recyclic.</figcaption>
{legend}{euro_chart(report)}</figure>
<h2>Par catégorie</h2>
{_category_table(report)}
<h2>Par moyen de paiement</h2>
{_method_table(report)}
<h2>Par jour</h2>
{_day_table(report)}
<h2>Sessions à surveiller</h2>
{_sessions(report)}
{findings}
</body>
</html>
"""
