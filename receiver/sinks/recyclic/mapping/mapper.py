"""Map a Paheko session snapshot to Recyclic's model (:func:`map_session`).

Rules (the policies are in :mod:`receiver.sinks.recyclic.mapping.config`):

* One Paheko tab is one sale. A line or payment Recyclic cannot take (refund, Ardoise / porte-monnaie,
  membership fee, unmapped category or method) follows its policy: ``hold`` stops the whole session with
  a French reason (every reason is listed at once); ``skip`` leaves it out with a :class:`SkippedPart`.
* A forwarded sale always balances (Σ lines = Σ payments, no negative line or payment, total ≥ 0). The
  lines Recyclic can take are forwarded; a left-out line settled inside the tab's payments (a return netted
  against a sale, a membership fee paid with the goods) leaves its share of those payments in Paheko with
  it — split over the tab's forwarded payments in proportion, to the cent — so Paheko = forwarded + left
  out per method. A payment left out with a positive amount (Ardoise, porte-monnaie, unmapped method)
  is never re-booked on another method: the lines it paid are left out with it when exactly one set of
  whole lines adds up to the forwardable payments; otherwise the whole tab is left out, with the reason.
* An unmapped location, or operator without ``default_operator``, under ``skip`` skips the whole session.
* The result carries a :class:`Reconciliation`, recomputed from the output: forwarded + skipped equals
  Paheko's figures to the cent and the gram, or :class:`ReconciliationError` is raised (a bug).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from receiver.outcomes import MustAct
from receiver.sinks.recyclic.profiles import idempotency_key, parse_sale_note, sale_note  # noqa: F401
from receiver.sinks.recyclic.mapping.config import MEMBERSHIP, Mapping, Place, local_currency_name
from receiver.sinks.recyclic.mapping.model import (
    MappedClosing,
    MappedItem,
    MappedOpening,
    MappedPayment,
    MappedSale,
    MappedSession,
    MethodTally,
    Reconciliation,
    SkippedPart,
    Tally,
)
from receiver.reread.snapshot import (
    ITEM_DEBT_PAYOFF,
    ITEM_PRODUCT,
    METHOD_DEBT,
    METHOD_WALLET,
    Item,
    Payment,
    SessionSnapshot,
    Tab,
)

#: Recyclic's ``initial_amount`` must lie in 0..10000 euros.
MAX_INITIAL_CENTS = 1_000_000
#: Which case names a wholly skipped tab when several apply to its parts.
CASE_ORDER = ("debt_wallet", "membership", "refunds", "unknown_category", "unknown_method")


class MappingHeld(MustAct):
    """The session cannot be mapped as configured; ``reasons`` (French) say what an admin must do."""

    def __init__(self, reasons: list[str]):
        super().__init__(" ".join(reasons))
        self.reasons = reasons


class ReconciliationError(AssertionError):
    """The mapped session does not account for Paheko's figures: a bug in the mapper, never data."""


def euros(cents: int) -> str:
    """French display of an amount: ``-3,00 €``."""
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100},{abs(cents) % 100:02d} €"


# --- the mapper ------------------------------------------------------------------------------------------


@dataclass
class _Part:
    """A line or payment found unforwardable: the case (``kind``), and what to say about it."""

    kind: str
    label: str  # e.g. 'ligne « Retour article » (-3,00 €)'
    why: str  # the sentence for a SkippedPart


@dataclass
class _Run:
    """One mapping in progress: hold reasons by case, then the sales and skipped parts built so far."""

    snapshot: SessionSnapshot
    mapping: Mapping
    held: dict[str, dict[int, list[str]]] = field(default_factory=lambda: defaultdict(dict))
    held_names: dict[str, dict[str, list[int]]] = field(default_factory=lambda: defaultdict(dict))
    other_reasons: list[str] = field(default_factory=list)
    sales: list[MappedSale] = field(default_factory=list)
    skipped: list[SkippedPart] = field(default_factory=list)

    def policy(self, kind: str) -> str:
        return getattr(self.mapping.policies, kind)

    def method_name(self, payment: Payment) -> str:
        method = self.snapshot.methods.get(payment.method_id)
        return method.name if method else f"n° {payment.method_id}"

    def method_type(self, payment: Payment) -> int | None:
        method = self.snapshot.methods.get(payment.method_id)
        return payment.type if payment.type is not None else (method.type if method else None)

    # -- classification of one line / payment: the cases that apply, most specific first --

    def line_cases(self, item: Item) -> list[_Part]:
        label = f"ligne « {item.name} » ({euros(item.total)})"
        parts = []
        if item.type != ITEM_PRODUCT:
            what = "règlement d'ardoise" if item.type == ITEM_DEBT_PAYOFF else "recharge de porte-monnaie"
            parts.append(_Part("debt_wallet", f"{label}, {what}", f"{what.capitalize()} : sans équivalent dans Recyclic."))
        if item.id_fee is not None or item.id_subscription is not None or self.mapping.categories.get(item.category_name) == MEMBERSHIP:
            parts.append(_Part("membership", label, "Cotisation d'adhésion : ce n'est pas une vente Recyclic."))
        if item.qty < 0 or item.total < 0:
            parts.append(_Part("refunds", label, "Remboursement : Recyclic ne peut pas le recevoir."))
        if not parts and item.category_name not in self.mapping.categories:
            parts.append(_Part("unknown_category", label,
                               f"Catégorie Paheko « {item.category_name} » non reliée à une catégorie Recyclic."))
        return parts

    def payment_cases(self, payment: Payment) -> list[_Part]:
        name = self.method_name(payment)
        label = f"paiement {name} ({euros(payment.amount)})"
        parts = []
        if self.method_type(payment) in (METHOD_DEBT, METHOD_WALLET):
            parts.append(_Part("debt_wallet", label, f"Paiement par {name} (ardoise ou porte-monnaie) : sans équivalent dans Recyclic."))
        if payment.amount < 0:
            parts.append(_Part("refunds", label, "Paiement négatif (remboursement) : Recyclic ne peut pas le recevoir."))
        if not parts and name not in self.mapping.methods:
            parts.append(_Part("unknown_method", label, f"Moyen de paiement Paheko « {name} » non relié à un code Recyclic."))
        return parts

    def blocked(self, tab: Tab, parts: list[_Part], name: str | None = None) -> bool:
        """Record the hold reasons among ``parts``; True when the thing they describe is not forwardable."""
        for part in parts:
            if self.policy(part.kind) == "hold":
                if part.kind in ("unknown_category", "unknown_method"):
                    self.held_names[part.kind].setdefault(name, []).append(tab.id)
                else:
                    self.held[part.kind].setdefault(tab.id, []).append(part.label)
        return bool(parts)

    # -- one tab --

    def tab(self, tab: Tab) -> None:
        s = self.snapshot
        if not tab.items and not tab.payments:
            self.skip(tab, "empty_tab", None, None, 0, 0, "Ticket vide (ni ligne ni paiement).")
            return
        lines_total = sum(item.total for item in tab.items)
        paid = sum(payment.amount for payment in tab.payments)
        if lines_total != paid:
            self.other_reasons.append(
                f"Ticket {tab.id} : ses paiements ({euros(paid)}) ne correspondent pas au total de ses lignes "
                f"({euros(lines_total)}) dans Paheko ; vérifiez ce ticket dans Paheko.")
            return
        kept_items, out_items = [], []
        for item in tab.items:
            if item.qty == 0:
                if item.total:
                    self.other_reasons.append(f"Ticket {tab.id} : ligne « {item.name} » de quantité nulle mais de "
                                              f"{euros(item.total)} ; corrigez-la dans Paheko.")
                else:
                    self.skip_item(tab, item, "empty_line", f"Ligne « {item.name} » de quantité nulle : rien à transmettre.")
                continue
            parts = self.line_cases(item)
            if self.blocked(tab, parts, item.category_name):
                out_items.append((item, parts[0]))
            else:
                kept_items.append(item)
        kept_pays, out_pays, zero_pays = [], [], []
        for payment in tab.payments:
            if payment.amount == 0:
                zero_pays.append(payment)
                continue
            parts = self.payment_cases(payment)
            if self.blocked(tab, parts, self.method_name(payment)):
                out_pays.append((payment, parts[0]))
            else:
                kept_pays.append(payment)
        for payment in zero_pays:
            self.skip(tab, "empty_payment", None, payment.id, 0, 0,
                      f"Paiement {self.method_name(payment)} de 0,00 € : rien à transmettre.")

        kept_total = sum(item.total for item in kept_items)
        kept_paid = sum(payment.amount for payment in kept_pays)
        # Left-out lines (a return, a membership fee…) were settled inside the same payments as the goods:
        # their share of those payments stays in Paheko with them, so the goods can still be forwarded.
        # A positive payment left out (Ardoise, porte-monnaie, unmapped method) is another matter: goods it
        # paid cannot be re-booked on another method, so such a tab is only forwarded when it still balances.
        absorb = kept_total != kept_paid and kept_paid > 0 and not any(p.amount > 0 for p, _ in out_pays)
        if kept_total != kept_paid and not absorb and kept_paid > 0 and not any(i.total for i, _ in out_items) \
                and all(p.amount > 0 for p, _ in out_pays):
            # Goods paid partly by a payment left out (local currency unmapped, Ardoise…): when exactly one
            # set of whole lines adds up to the forwardable payments, those lines are what they paid.
            paid_lines = unique_subset(kept_items, kept_paid)
            if paid_lines is not None:
                payer = ", ".join(f"{self.method_name(p)} {euros(p.amount)}" for p, _ in out_pays)
                for item in kept_items:
                    if item not in paid_lines:
                        part = out_pays[0][1]
                        out_items.append((item, _Part(part.kind, part.label,
                                                      f"Ligne réglée par le paiement écarté ({payer}) : seule "
                                                      "répartition des paiements par lignes entières.")))
                kept_items = paid_lines
                kept_total = kept_paid
        codes = list(dict.fromkeys(self.mapping.methods[self.method_name(p)] for p in kept_pays))
        whole: tuple[str, str] | None = None
        if not kept_items:
            whole = (self.first_kind(out_items, out_pays), "aucune de ses lignes n'est transmissible")
        elif kept_total != kept_paid and not absorb:
            why = ("aucun paiement transmissible ne règle ses lignes" if kept_paid == 0 else
                   "une partie de ses lignes est réglée par un paiement écarté, qui ne peut pas être reporté "
                   "sur un autre moyen")
            whole = (self.first_kind(out_items, out_pays),
                     f"{why} (paiements transmissibles {euros(kept_paid)}, lignes transmissibles {euros(kept_total)})")
        elif self.mapping.profile == "legacy" and len(codes) > 1:
            label = f"{', '.join(codes)}"
            if self.policy("mixed_methods") == "hold":
                self.held["mixed_methods"].setdefault(tab.id, []).append(label)
                return
            whole = ("mixed_methods", f"payé avec plusieurs moyens ({label}), alors que le profil legacy "
                                      "(Recyclic 1.3) n'en accepte qu'un par vente")

        for item, part in out_items:
            self.skip_item(tab, item, part.kind, f"{part.why} Ligne « {item.name} » écartée.")
        for payment, part in out_pays:
            self.skip(tab, part.kind, None, payment.id, payment.amount, 0,
                      f"{part.why} Paiement {self.method_name(payment)} de {euros(payment.amount)} écarté.")
        if whole is not None:
            kind, why = whole
            reason = f"Ticket {tab.id} écarté en entier : {why}."
            for item in kept_items:
                self.skip_item(tab, item, kind, reason)
            for payment in kept_pays:
                self.skip(tab, kind, None, payment.id, payment.amount, 0, reason)
            return

        forwarded = {payment.id: payment.amount for payment in kept_pays}
        if absorb:
            kind = self.first_kind(out_items, out_pays)
            lines = ", ".join(f"« {item.name} » ({euros(item.total)})" for item, _ in out_items) or "aucune"
            shares = allocate(kept_total - kept_paid, [(p.id, p.amount) for p in kept_pays])
            for payment in kept_pays:
                forwarded[payment.id] = payment.amount + shares[payment.id]
                left = -shares[payment.id]
                if left:
                    self.skip(tab, kind, None, payment.id, left, 0,
                              f"Part du paiement {self.method_name(payment)} ({euros(payment.amount)}) qui revient aux "
                              f"lignes écartées du ticket {tab.id} ({lines}) : {euros(left)} restent dans Paheko, "
                              f"{euros(forwarded[payment.id])} sont transmis avec les autres lignes.")
        self.sales.append(MappedSale(
            tab_id=tab.id,
            idempotency_key=idempotency_key(s.source, s.session_id, tab.id),
            note=sale_note(s.source, s.session_id, tab.id),
            items=tuple(
                MappedItem(item.id, self.mapping.categories[item.category_name], item.qty,
                           item.qty * (item.weight or 0), item.total, item.name)
                for item in kept_items),
            total_cents=kept_total,
            payments=self.payments([p for p in kept_pays if forwarded[p.id]], forwarded, kept_total),
        ))

    def payments(self, kept: list[Payment], forwarded: dict[int, int], total: int) -> tuple[MappedPayment, ...]:
        by_code: dict[str, list[Payment]] = {}
        for payment in kept:
            by_code.setdefault(self.mapping.methods[self.method_name(payment)], []).append(payment)
        if not by_code and total == 0 and self.mapping.profile == "legacy":
            return (MappedPayment("cash", 0, (), ()),)  # a free sale still needs a method in Recyclic 1.3
        return tuple(
            MappedPayment(code, sum(forwarded[p.id] for p in group), tuple(p.id for p in group),
                          tuple(forwarded[p.id] for p in group))
            for code, group in by_code.items())

    @staticmethod
    def first_kind(out_items: list, out_pays: list) -> str:
        kinds = [part.kind for _, part in out_items + out_pays]
        return min(kinds, key=CASE_ORDER.index, default="empty_tab")

    def skip_item(self, tab: Tab, item: Item, kind: str, reason: str) -> None:
        self.skip(tab, kind, item.id, None, item.total, item.qty * (item.weight or 0), reason)

    def skip(self, tab: Tab, kind: str, item_id, payment_id, cents: int, grams: int, reason: str) -> None:
        method = None
        if payment_id is not None:
            method = self.method_name(next(p for p in tab.payments if p.id == payment_id))
        self.skipped.append(SkippedPart(kind, tab.id, item_id, payment_id, cents, grams, reason, method))

    # -- hold reasons --

    def reasons(self) -> list[str]:
        table = f"[sources.{self.snapshot.source}.mapping"
        out = list(self.other_reasons)
        cases = {
            "debt_wallet": "Ardoise ou porte-monnaie, sans équivalent dans Recyclic",
            "membership": "Cotisations d'adhésion, qui ne sont pas des ventes Recyclic",
            "refunds": "Remboursements, que Recyclic ne peut pas recevoir",
            "mixed_methods": "Tickets payés avec plusieurs moyens alors que le profil legacy (Recyclic 1.3) "
                             "n'en accepte qu'un par vente",
        }
        for kind, what in cases.items():
            tabs = self.held.get(kind)
            if tabs:
                details = " ; ".join(f"ticket {tab} : {', '.join(labels)}" for tab, labels in tabs.items())
                out.append(f"{what} ({details}). Saisissez-les à la main dans Recyclic, ou écrivez "
                           f'{kind} = "skip" dans {table}.policies] pour les écarter en les consignant.')
        for name, tabs in self.held_names.get("unknown_category", {}).items():
            out.append(f"Catégorie Paheko « {name} » non reliée à une catégorie Recyclic ({_tickets(tabs)}) : "
                       f"ajoutez-la dans {table}.categories].")
        for name, tabs in self.held_names.get("unknown_method", {}).items():
            out.append(f"Moyen de paiement Paheko « {name} » non relié à un code de paiement Recyclic "
                       f"({_tickets(tabs)}) : ajoutez-le dans {table}.methods].")
        return out


#: Above this many lines, :func:`unique_subset` does not search (2**n sums).
SUBSET_MAX_LINES = 12


def unique_subset(items: list[Item], total: int) -> list[Item] | None:
    """The only non-empty, proper set of ``items`` (whole lines) whose totals add up to ``total``, or None
    when there is none, more than one, or too many lines to search."""
    n = len(items)
    if n < 2 or n > SUBSET_MAX_LINES:
        return None
    found = None
    for mask in range(1, (1 << n) - 1):
        if sum(items[i].total for i in range(n) if mask >> i & 1) == total:
            if found is not None:
                return None
            found = mask
    return None if found is None else [items[i] for i in range(n) if found >> i & 1]


def allocate(total: int, weights: list[tuple[int, int]]) -> dict[int, int]:
    """Split ``total`` cents over ``weights`` ((key, positive amount) pairs) in proportion, to the cent:
    largest remainders first, ties to the earlier key; the shares add up to ``total`` exactly. When
    ``total`` takes away exactly the amount of one payment, that payment alone gives it."""
    exact = [key for key, amount in weights if amount == -total]
    if exact:  # a payment of exactly the left-out amount paid it (a fee by card, the goods in cash)
        return {key: (total if key == exact[0] else 0) for key, _ in weights}
    whole = sum(amount for _, amount in weights)
    sign, size = (1 if total >= 0 else -1), abs(total)
    shares = {key: size * amount // whole for key, amount in weights}
    rest = size - sum(shares.values())
    order = sorted(weights, key=lambda kw: (-(size * kw[1] % whole), weights.index(kw)))
    for key, _ in order[:rest]:
        shares[key] += 1
    return {key: sign * share for key, share in shares.items()}


def _tickets(tab_ids: list[int]) -> str:
    ids = list(dict.fromkeys(tab_ids))
    return ("ticket " if len(ids) == 1 else "tickets ") + ", ".join(str(i) for i in ids)


def map_session(snapshot: SessionSnapshot, mapping: Mapping) -> MappedSession:
    """Map one closed session. Raises :class:`MappingHeld` (every reason at once) when a ``hold`` case
    occurs, :class:`ReconciliationError` if the result would not account for Paheko's figures."""
    run = _Run(snapshot, mapping)
    place, operator, session_skip = _opening_targets(run)
    if session_skip is not None:
        kind, why = session_skip
        for tab in snapshot.tabs:
            _skip_tab(run, tab, kind, f"Session entière écartée : {why}")
    else:
        for tab in snapshot.tabs:
            run.tab(tab)
    _local_currency_as_cash(run)
    opening = closing = None
    if place is not None and operator is not None and session_skip is None:
        opening, closing = _open_close(run, place, operator)
    reasons = run.reasons()
    if reasons:
        raise MappingHeld(reasons)
    sales = tuple(run.sales)
    skipped = tuple(sorted(run.skipped, key=lambda p: (p.tab_id or 0, p.item_id is None, p.item_id or p.payment_id or 0)))
    return MappedSession(
        source=snapshot.source, session_id=snapshot.session_id, profile=mapping.profile,
        close_session=mapping.close_session, opening=opening, sales=sales,
        closing=closing if mapping.close_session else None, skipped=skipped,
        reconciliation=reconcile(snapshot, sales, skipped),
    )


def _opening_targets(run: _Run) -> tuple[Place | None, str | None, tuple[str, str] | None]:
    """The Recyclic site/register and operator, and a whole-session skip (kind, why) if one applies."""
    s, m, src = run.snapshot, run.mapping, run.snapshot.source
    problems = []
    if s.location is None:
        place = m.no_location
        if place is None:
            problems.append(("unknown_location", "session sans lieu dans Paheko, et aucun site Recyclic n'est "
                             f"indiqué pour ce cas : renseignez [sources.{src}.mapping.no_location]."))
    else:
        place = m.locations.get(s.location.name)
        if place is None:
            problems.append(("unknown_location", f"lieu Paheko « {s.location.name} » non relié à un site "
                             f"Recyclic : ajoutez-le dans [sources.{src}.mapping.locations]."))
    operator = m.operators.get(s.open_user or "", m.default_operator)
    if operator is None:
        problems.append(("unknown_operator", f"opérateur Paheko « {s.open_user or ''} » non relié à un utilisateur "
                         f"Recyclic : ajoutez-le dans [sources.{src}.mapping.operators] ou indiquez "
                         "default_operator."))
    skip = None
    for kind, why in problems:
        if run.policy(kind) == "hold":
            run.other_reasons.append(why[0].upper() + why[1:])
        elif skip is None:
            skip = (kind, why)
    return place, operator, skip


def _skip_tab(run: _Run, tab: Tab, kind: str, reason: str) -> None:
    if not tab.items and not tab.payments:
        run.skip(tab, kind, None, None, 0, 0, reason)
    for item in tab.items:
        run.skip_item(tab, item, kind, reason)
    for payment in tab.payments:
        run.skip(tab, kind, None, payment.id, payment.amount, 0, reason)


def _euro_cash(run: _Run, balance) -> bool:
    """A drawer Recyclic's cash session stands for: the single drawer of old caisse versions, or a method
    mapped to ``cash`` that holds euros (a local currency's drawer never adds to Recyclic's float)."""
    if balance.method_id is None:
        return True
    if run.mapping.methods.get(balance.method_name or "") != "cash":
        return False
    return not local_currency_name(balance.method_name or "")


def _local_currency_as_cash(run: _Run) -> None:
    """Hold when a method used in the session is mapped to euro ``cash`` but its name says local currency
    (a cash method on another account than 530 is only a doubt: ``mapping check`` warns, the mapping decides)."""
    s, src = run.snapshot, run.snapshot.source
    for method_id in sorted({p.method_id for p in s.payments()}):
        method = s.methods.get(method_id)
        if method is None or run.mapping.methods.get(method.name) != "cash":
            continue
        if local_currency_name(method.name):
            run.other_reasons.append(
                f"Moyen de paiement Paheko « {method.name} » relié à cash (les espèces en euros de Recyclic) alors "
                "que son nom désigne une monnaie locale : ses encaissements seraient comptés comme des euros. Une "
                f"correspondance à revoir : reliez-le dans [sources.{src}.mapping.methods] à un moyen de paiement "
                "Recyclic propre à cette monnaie (à créer "
                "dans Recyclic par un super-admin), ou retirez la ligne pour décider avec la politique unknown_method.")


def _open_close(run: _Run, place: Place, operator: str) -> tuple[MappedOpening, MappedClosing]:
    s = run.snapshot
    cash = [b for b in s.balances if _euro_cash(run, b)]
    initial = sum(b.open_amount for b in cash)
    actual = sum(b.close_amount if b.close_amount is not None else b.expected_close for b in cash)
    if initial > MAX_INITIAL_CENTS:
        run.other_reasons.append(
            f"Fond de caisse à l'ouverture ({euros(initial)}) supérieur au maximum accepté par Recyclic "
            f"({euros(MAX_INITIAL_CENTS)}) : la session ne peut pas y être ouverte ; saisissez-la à la main.")
    opening = MappedOpening(place.site_id, place.register_id, operator, initial, s.opened)
    return opening, MappedClosing(actual, _variance_comment(run, cash, initial, actual))


def _variance_comment(run: _Run, cash: list, initial: int, actual: int) -> str:
    s = run.snapshot
    result = s.result if s.result is not None else s.totals.items_total
    parts = [f"Clôture Paheko (source {s.source}, session {s.session_id}"
             + (f", par {s.close_user}" if s.close_user else "") + f") : ventes {euros(result)} en "
             f"{len(s.tabs)} tickets."]
    drawers = []
    for b in s.balances:
        name = b.method_name or "caisse"
        close = euros(b.close_amount) if b.close_amount is not None else "non comptée"
        error = euros(b.error_amount) if b.error_amount is not None else "inconnu"
        drawers.append(f"{name} ouverture {euros(b.open_amount)}, clôture {close}, écart {error}")
    if drawers:
        parts.append("Caisses : " + " ; ".join(drawers) + ".")
    takings = [f"{_method(s, mid)} {euros(amount)}" for mid, amount in sorted(s.totals.payments_by_method.items())]
    if takings:
        parts.append("Encaissements : " + ", ".join(takings) + ".")
    others: dict[str, int] = {}
    for sale in run.sales:  # what Recyclic will count as cash although it is not: forwarded non-cash payments
        for pay in sale.payments:
            if pay.code != "cash" and pay.amount_cents:
                others[pay.code] = others.get(pay.code, 0) + pay.amount_cents
    if others:
        parts.append(f"Hors espèces transmis : {euros(sum(others.values()))} ("
                     + ", ".join(f"{code} {euros(amount)}" for code, amount in sorted(others.items()))
                     + "), que Recyclic compte pourtant dans l'espèce attendue.")
    forwarded = sum(sale.total_cents for sale in run.sales)
    parts.append(f"Espèces : ouverture {euros(initial)}, comptage {euros(actual)} ; écart affiché par Recyclic "
                 f"attendu : {euros(actual - initial - forwarded)}.")
    if run.skipped:
        left = sum(p.amount_cents for p in run.skipped if p.item_id is not None)
        parts.append(f"Non transmis : {len(run.skipped)} élément(s), lignes pour {euros(left)} "
                     "(détail dans le registre du récepteur).")
    return " ".join(parts)


def _method(s: SessionSnapshot, method_id: int) -> str:
    method = s.methods.get(method_id)
    return method.name if method else f"moyen n° {method_id}"


# --- reconciliation ------------------------------------------------------------------------------------


def reconcile(snapshot: SessionSnapshot, sales: tuple[MappedSale, ...], skipped: tuple[SkippedPart, ...]) -> Reconciliation:
    """Recompute, from the output alone, forwarded + skipped against the snapshot's figures; raise
    :class:`ReconciliationError` on any gap, any unaccounted or doubly forwarded Paheko id, or any sale that
    would not balance."""
    problems = []
    method_of = {p.id: p.method_id for p in snapshot.payments()}
    item_ids = [i.paheko_item_id for sale in sales for i in sale.items] + [p.item_id for p in skipped if p.item_id is not None]
    if sorted(item_ids) != sorted(i.id for i in snapshot.items()):
        problems.append("items forwarded + skipped are not exactly Paheko's items")
    seen = {pid for sale in sales for pay in sale.payments for pid in pay.paheko_payment_ids}
    seen |= {p.payment_id for p in skipped if p.payment_id is not None}
    if seen != set(method_of):
        problems.append("payments forwarded + skipped are not exactly Paheko's payments")
    for sale in sales:
        if (sum(i.total_cents for i in sale.items) != sale.total_cents
                or sum(p.amount_cents for p in sale.payments) != sale.total_cents
                or sale.total_cents < 0 or any(i.total_cents < 0 or i.quantity <= 0 for i in sale.items)
                or any(p.amount_cents < 0 or p.amount_cents != sum(p.paheko_amounts_cents) for p in sale.payments)):
            problems.append(f"sale for tab {sale.tab_id} does not balance")
    by_method: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for sale in sales:
        for pay in sale.payments:
            for pid, amount in zip(pay.paheko_payment_ids, pay.paheko_amounts_cents, strict=True):
                by_method[method_of[pid]][0] += amount
    for part in skipped:
        if part.payment_id is not None:
            by_method[method_of[part.payment_id]][1] += part.amount_cents
    totals = snapshot.totals
    methods = sorted(set(by_method) | set(totals.payments_by_method))
    sale_tabs = {sale.tab_id for sale in sales}
    result = Reconciliation(
        tabs=Tally(len(snapshot.tabs), len(sales), len({p.tab_id for p in skipped} - sale_tabs)),
        items_cents=Tally(totals.items_total, sum(i.total_cents for s in sales for i in s.items),
                          sum(p.amount_cents for p in skipped if p.item_id is not None)),
        weight_grams=Tally(totals.weight_grams, sum(i.weight_grams for s in sales for i in s.items),
                           sum(p.weight_grams for p in skipped if p.item_id is not None)),
        payments=tuple(
            MethodTally(totals.payments_by_method.get(mid, 0), *by_method[mid], method_id=mid,
                        method_name=snapshot.methods[mid].name if mid in snapshot.methods else None)
            for mid in methods),
        balanced=True,
    )
    tallies = [result.tabs, result.items_cents, result.weight_grams, *result.payments]
    if not all(t.balanced for t in tallies):
        problems.append(f"totals do not balance: {tallies}")
    if problems:
        raise ReconciliationError(f"session {snapshot.session_id} of {snapshot.source!r}: " + "; ".join(problems))
    return result
