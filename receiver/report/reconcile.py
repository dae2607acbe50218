"""Month reconciliation: does Recyclic hold everything the till sold, by category, method and day?

The one interface of the report. :func:`reconcile` turns, for each ledger entry of a period, the three things
the ledger keeps — the snapshot (what Paheko holds), the mapped document (what goes to Recyclic and what is
left out, with its kind) and the forward records (what Recyclic acknowledged) — into rows of integer figures:

- per Paheko category (and per day × category): articles, grams, cents;
- per Paheko payment method (and per day × method): cents;

each split into ``paheko`` = ``forwarded`` + ``left_out[group]`` + ``held`` + ``pending`` (+ ``gap``). Every
bucket is computed from its own record (the mapped sale line, the skipped part, the snapshot line), never as
the remainder of the others, so ``gap`` is a real check: it is zero unless a record disagrees with Paheko,
and the report then says so.

The inputs are plain JSON-ready dicts (what the ledger stores), read by key: the report does not depend on
where the mapping or sink code lives, and a newer document with more keys reads the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta

from receiver.outcomes import STILL_OPEN


#: Left-out kinds (``SkippedPart.kind``) grouped as an admin reads them; any other kind is "other".
KIND_GROUPS = {
    "refunds": "refunds",
    "membership": "membership",
    "debt_wallet": "debt_wallet",
    "unknown_category": "unmapped",
    "unknown_method": "unmapped",
    "unknown_location": "unmapped",
    "unknown_operator": "unmapped",
}
#: Group → French label (plural, as in "3,00 € de remboursements"), in display order.
GROUP_LABELS = {
    "refunds": "remboursements",
    "membership": "cotisations",
    "debt_wallet": "ardoise et porte-monnaie",
    "unmapped": "sans correspondance dans Recyclic",
    "other": "autres parts écartées",
}
GROUPS = tuple(GROUP_LABELS)

#: Ledger states (``receiver.ledger.State`` values) in which nothing moves without a person.
STUCK_STATES = frozenset({"held", "dead"})
MONTHS = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
          "novembre", "décembre")


def group_of(kind: str) -> str:
    return KIND_GROUPS.get(kind, "other")


@dataclass
class Figures:
    """Articles (Σ quantity), grams, cents. Mutable: rows accumulate into it."""

    items: int = 0
    grams: int = 0
    cents: int = 0

    def add(self, items: int, grams: int, cents: int) -> None:
        self.items += items
        self.grams += grams
        self.cents += cents

    def merge(self, other: Figures) -> None:
        self.add(other.items, other.grams, other.cents)

    def minus(self, other: Figures) -> Figures:
        return Figures(self.items - other.items, self.grams - other.grams, self.cents - other.cents)

    def __bool__(self) -> bool:
        return bool(self.items or self.grams or self.cents)


@dataclass
class Row:
    """One line of a table: ``label`` is the Paheko category or method name; ``day`` None for the period;
    ``targets`` the Recyclic categories (or payment codes) its forwarded parts went to."""

    label: str
    day: date | None = None
    targets: set[str] = field(default_factory=set)
    paheko: Figures = field(default_factory=Figures)
    forwarded: Figures = field(default_factory=Figures)
    left_out: dict[str, Figures] = field(default_factory=lambda: {g: Figures() for g in GROUPS})
    held: Figures = field(default_factory=Figures)
    pending: Figures = field(default_factory=Figures)

    @property
    def left_out_total(self) -> Figures:
        total = Figures()
        for figures in self.left_out.values():
            total.merge(figures)
        return total

    @property
    def unsent(self) -> Figures:
        """Not (yet) in Recyclic and not left out on purpose: held for a person, or waiting to be sent."""
        total = Figures()
        total.merge(self.held)
        total.merge(self.pending)
        return total

    @property
    def accounted(self) -> Figures:
        total = Figures()
        for figures in (self.forwarded, self.left_out_total, self.held, self.pending):
            total.merge(figures)
        return total

    @property
    def gap(self) -> Figures:
        """Paheko minus everything accounted for: zero when every record agrees with Paheko."""
        return self.paheko.minus(self.accounted)

    def merge(self, other: Row) -> None:
        self.targets |= other.targets
        for name in ("paheko", "forwarded", "held", "pending"):
            getattr(self, name).merge(getattr(other, name))
        for group, figures in other.left_out.items():
            self.left_out[group].merge(figures)


@dataclass(frozen=True)
class SessionLine:
    """One Paheko session of the period and where it stands on both sides (French words for people)."""

    session_id: int
    day: date | None
    state: str
    paheko: str  # "fermée" | "ouverte" | "pas encore relue"
    recyclic: str  # see :func:`_recyclic_status`
    cents: int | None  # Paheko's sales total (announced, when not read yet)
    reason: str | None
    needs_attention: bool


@dataclass(frozen=True)
class LedgerSession:
    """What the ledger holds for one Paheko session: the report's input.

    ``forwards`` maps (kind, Paheko id) → (status, sink id), kind ``session``/``sale``/``close``/``document``.
    ``summary`` is the notification's figures (``closed``, ``result``) for a session not read yet.
    """

    source: str
    session_id: int
    state: str
    reason: str | None
    snapshot: Mapping | None
    mapped: Mapping | None
    forwards: Mapping[tuple[str, int], tuple[str, str | None]]
    summary: Mapping = field(default_factory=dict)
    day: date | None = None  # when no snapshot says it


@dataclass
class Report:
    source: str
    since: date
    until: date  # inclusive
    categories: list[Row]
    methods: list[Row]
    category_days: list[Row]
    method_days: list[Row]
    days: list[Row]  # all categories per day
    total: Row
    payments_total: Row
    sessions: list[SessionLine]
    findings: list[str] = field(default_factory=list)  # from --verify, or from records that disagree
    category_names: dict[str, str] = field(default_factory=dict)  # Recyclic id → name, when known

    @property
    def period_label(self) -> str:
        return period_label(self.since, self.until)

    @property
    def attention(self) -> list[SessionLine]:
        return [s for s in self.sessions if s.needs_attention]

    @property
    def balanced(self) -> bool:
        """Every figure of every row is accounted for (no gap)."""
        rows = (*self.categories, *self.methods, self.total, self.payments_total)
        return not any(row.gap for row in rows)

    @property
    def complete(self) -> bool:
        """Everything not deliberately left out is in Recyclic, and nothing needs a look."""
        return (self.balanced and not self.total.held and not self.total.pending and not self.payments_total.held
                and not self.payments_total.pending and not self.attention and not self.findings)

    @property
    def verdict(self) -> str:
        return verdict(self)


# --- building the report ---------------------------------------------------------------------------------


def session_day(session: LedgerSession) -> date | None:
    """The session's day: its opening date in the source's time zone (a session is never split between days)."""
    if session.snapshot is not None:
        return date.fromisoformat(session.snapshot["opened"][:10])
    closed = session.summary.get("closed") if session.summary else None
    if closed:
        return date.fromisoformat(str(closed)[:10])
    return session.day


def _done(forwards: Mapping, kind: str, paheko_id: int) -> bool:
    record = forwards.get((kind, paheko_id))
    return record is not None and record[0] == "done"


class _Accumulator:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, date | None, str], Row] = {}

    def row(self, table: str, day: date | None, label: str) -> Row:
        key = (table, day, label)
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = Row(label, day)
        return row


def _add_session(acc: _Accumulator, s: LedgerSession, day: date) -> None:
    """Add one read session to its day's rows (the period's rows are the days' sums, made at the end)."""
    snap, mapped, fw = s.snapshot, s.mapped, s.forwards
    stuck = s.state in STUCK_STATES
    whole_done = _done(fw, "document", s.session_id)  # file / webhook sinks take the session as one document
    methods = snap.get("methods") or {}

    forwarded_items: dict[int, dict] = {}
    forwarded_pays: dict[int, list[tuple[int, str, int]]] = {}
    skipped_items: dict[int, list[dict]] = {}
    skipped_pays: dict[int, list[dict]] = {}
    if mapped is not None:
        for sale in mapped.get("sales", ()):
            tab = sale["tab_id"]
            for item in sale["items"]:
                forwarded_items[item["paheko_item_id"]] = item
            for pay in sale["payments"]:
                ids = pay["paheko_payment_ids"]
                amounts = pay.get("paheko_amounts_cents") or ([pay["amount_cents"]] if len(ids) == 1 else [])
                for pid, cents in zip(ids, amounts):
                    forwarded_pays.setdefault(pid, []).append((tab, pay["code"], cents))
        for part in mapped.get("skipped", ()):
            if part.get("item_id") is not None:
                skipped_items.setdefault(part["item_id"], []).append(part)
            elif part.get("payment_id") is not None:
                skipped_pays.setdefault(part["payment_id"], []).append(part)

    for tab in snap["tabs"]:
        tab_done = whole_done or _done(fw, "sale", tab["id"])
        for item in tab["items"]:
            row = acc.row("cat", day, item["category_name"])
            qty, weight, total = item["qty"], item["weight"], item["total"]
            grams = qty * weight if weight is not None else 0
            f = row.paheko
            f.items += qty
            f.grams += grams
            f.cents += total
            line = forwarded_items.get(item["id"])
            if line is not None:
                if tab_done:
                    row.targets.add(line["category_id"])
                    f = row.forwarded
                else:
                    f = row.held if stuck else row.pending
                f.items += line["quantity"]
                f.grams += line["weight_grams"]
                f.cents += line["total_cents"]
                continue
            parts = skipped_items.get(item["id"])
            if parts is not None:
                for part in parts:
                    row.left_out[group_of(part["kind"])].add(qty, part["weight_grams"], part["amount_cents"])
                    qty = 0  # several parts of one line count its articles once
            elif mapped is None:
                (row.held if stuck else row.pending).add(qty, grams, total)
            # else: the mapped document does not account for this line: it shows as a gap
        for pay in tab["payments"]:
            method = methods.get(str(pay["method_id"])) or methods.get(pay["method_id"])
            row = acc.row("pay", day, method["name"] if method else f"moyen n° {pay['method_id']}")
            row.paheko.cents += pay["amount"]
            if mapped is None:
                (row.held if stuck else row.pending).cents += pay["amount"]
                continue
            for tab_id, code, cents in forwarded_pays.get(pay["id"], ()):
                if whole_done or _done(fw, "sale", tab_id):
                    row.targets.add(code)
                    row.forwarded.cents += cents
                else:
                    (row.held if stuck else row.pending).cents += cents
            for part in skipped_pays.get(pay["id"], ()):
                row.left_out[group_of(part["kind"])].cents += part["amount_cents"]


def _recyclic_status(s: LedgerSession) -> tuple[str, bool]:
    """What Recyclic holds of the session, and whether someone should look."""
    fw = s.forwards
    if _done(fw, "document", s.session_id):
        return "transmise (document)", False
    mapped = s.mapped
    if s.state == "forwarded":
        if mapped is not None and mapped.get("opening") is None:
            return "rien à transmettre (session écartée)", False
        if _done(fw, "close", s.session_id):
            return "fermée", False
        if mapped is not None and not mapped.get("close_session", True):
            return "laissée ouverte (configuration)", True
        if mapped is not None and not mapped.get("sales"):
            return "rien à transmettre", False
        return "ouverte", True
    if _done(fw, "session", s.session_id):
        return "ouverte, transmission inachevée", True
    return "pas encore transmise", True


def _paheko_status(s: LedgerSession) -> str:
    if s.snapshot is not None:
        return "fermée"
    if s.reason == STILL_OPEN:
        return "ouverte"
    return "pas encore relue"


def reconcile(
    source: str,
    sessions: Iterable[LedgerSession],
    since: date,
    until: date,
    *,
    open_in_paheko: Iterable[tuple[int, date]] = (),
) -> Report:
    """The report of ``source`` over ``since``..``until`` (inclusive), from the ledger's sessions.

    Sessions whose day falls outside the period are ignored. ``open_in_paheko``: (session id, opening day)
    of sessions Paheko still has open (read from Paheko, optional); they are listed, with no figures.
    """
    acc = _Accumulator()
    lines: list[SessionLine] = []
    seen: set[int] = set()
    for s in sessions:
        day = session_day(s)
        if day is None or not since <= day <= until:
            continue
        seen.add(s.session_id)
        if s.snapshot is not None:
            _add_session(acc, s, day)
        recyclic, look = _recyclic_status(s)
        cents = (sum(i["total"] for t in s.snapshot["tabs"] for i in t["items"]) if s.snapshot is not None
                 else s.summary.get("result") if s.summary else None)
        lines.append(SessionLine(s.session_id, day, s.state, _paheko_status(s), recyclic, cents,
                                 s.reason if s.state != "forwarded" else None,
                                 look or s.state in STUCK_STATES or s.snapshot is None))
    for session_id, day in open_in_paheko:
        if session_id not in seen and since <= day <= until:
            lines.append(SessionLine(session_id, day, "open", "ouverte", "pas encore transmise", None,
                                     "Session encore ouverte dans Paheko : elle sera transmise à sa clôture.", True))
    lines.sort(key=lambda line: (line.day or since, line.session_id))

    def table(name: str) -> tuple[list[Row], list[Row]]:
        """The day rows of one table, and the period rows (their sums per label)."""
        day_rows = [row for (t, _, _), row in acc.rows.items() if t == name]
        period: dict[str, Row] = {}
        for row in day_rows:
            period.setdefault(row.label, Row(row.label)).merge(row)
        order = (lambda r: (-r.paheko.grams, r.label)) if name == "cat" else (lambda r: r.label)
        return sorted(period.values(), key=order), sorted(day_rows, key=lambda r: (r.day, order(r)))

    categories, category_days = table("cat")
    methods, method_days = table("pay")
    total, payments_total = Row("Total"), Row("Total")
    for row in categories:
        total.merge(row)
    for row in methods:
        payments_total.merge(row)
    days: dict[date, Row] = {}
    for row in category_days:
        days.setdefault(row.day, Row("Total", row.day)).merge(row)
    report = Report(source, since, until, categories, methods, category_days, method_days,
                    [days[d] for d in sorted(days)], total, payments_total, lines)
    for row in categories:
        if row.gap:
            report.findings.append(f"Catégorie « {row.label} » : {gap_words(row.gap)} que le registre "
                                   "n'explique pas (ni transmis, ni écarté, ni en attente).")
    for row in methods:
        if row.gap:
            report.findings.append(f"Moyen de paiement « {row.label} » : {euros(row.gap.cents)} que le registre "
                                   "n'explique pas.")
    return report


# --- words -------------------------------------------------------------------------------------------------


def euros(cents: int) -> str:
    """``1 234,50 €`` (narrow no-break space between thousands, as French typography wants)."""
    sign = "-" if cents < 0 else ""
    whole = f"{abs(cents) // 100:,}".replace(",", "\u202f")
    return f"{sign}{whole},{abs(cents) % 100:02d} €"


def kilos(grams: int) -> str:
    """``12,345 kg`` from integer grams, exactly."""
    sign = "-" if grams < 0 else ""
    whole = f"{abs(grams) // 1000:,}".replace(",", "\u202f")
    return f"{sign}{whole},{abs(grams) % 1000:03d} kg"


def gap_words(figures: Figures) -> str:
    parts = []
    if figures.cents:
        parts.append(euros(figures.cents))
    if figures.grams:
        parts.append(kilos(figures.grams))
    if figures.items:
        parts.append(f"{figures.items} article(s)")
    return ", ".join(parts)


def month_last_day(first: date) -> date:
    """The last day of ``first``'s month."""
    return (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)


def period_label(since: date, until: date) -> str:
    """``Septembre 2025`` for a whole calendar month, ``Année 2025``, else ``Du 01/09/2025 au 15/09/2025``."""
    if since.day == 1 and until == month_last_day(since):
        return f"{MONTHS[since.month - 1].capitalize()} {since.year}"
    if (since.month, since.day, until.month, until.day) == (1, 1, 12, 31) and since.year == until.year:
        return f"Année {since.year}"
    if since == until:
        return f"Le {since:%d/%m/%Y}"
    return f"Du {since:%d/%m/%Y} au {until:%d/%m/%Y}"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " et " + parts[-1]


def left_out_words(report: Report) -> list[str]:
    out = []
    for group in GROUPS:
        figures = report.total.left_out[group]
        if not figures and not report.payments_total.left_out[group]:
            continue
        cents = figures.cents if figures else report.payments_total.left_out[group].cents
        text = f"{euros(abs(cents))} de {GROUP_LABELS[group]}"
        if figures.grams:
            text += f" ({kilos(abs(figures.grams))})"
        out.append(text)
    return out


def verdict(report: Report) -> str:
    """The one-line French answer: is everything in Recyclic, and what is not (and why)?"""
    head = report.period_label
    if not report.sessions:
        return f"{head} : aucune session de caisse dans le registre du récepteur pour cette période."
    left = left_out_words(report)
    if report.complete:
        return f"{head} : tout est dans Recyclic" + (f", sauf {_join(left)}" if left else "") + "."
    problems = []
    if report.total.pending:
        problems.append(f"{euros(report.total.pending.cents)} pas encore transmis")
    if report.total.held:
        problems.append(f"{euros(report.total.held.cents)} bloqués (une action est nécessaire)")
    unread = [s for s in report.sessions if s.paheko != "fermée"]
    if unread:
        problems.append(f"{len(unread)} session(s) pas encore relue(s) ou encore ouverte(s) dans Paheko")
    open_recyclic = [s for s in report.sessions if s.paheko == "fermée" and s.needs_attention
                     and s.recyclic not in ("pas encore transmise",) and s.state == "forwarded"]
    if open_recyclic:
        problems.append(f"{len(open_recyclic)} session(s) pas fermée(s) dans Recyclic")
    if not report.balanced:
        problems.append("un écart que le registre n'explique pas")
    if report.findings and report.balanced:
        problems.append(f"{len(report.findings)} différence(s) relevée(s)")
    if not problems:
        problems.append(f"{len(report.attention)} session(s) à vérifier")
    text = f"{head} : pas encore tout dans Recyclic — {_join(problems)}"
    if left:
        text += f" ; écarté volontairement : {_join(left)}"
    return text + "."
