"""``mapping check``: what a source's mapping lacks or gets wrong before anything is sent.

Findings are ``problem`` (the mapping would hold sessions, mis-book, or lock a live till: exit status 1) or
``warning`` (a choice with a cost, said so). Three layers, each usable alone:

* :func:`paheko_findings` — Paheko's names against the mapping (unmapped names, local currency as cash,
  policies that would hold sessions, closing turned off);
* :func:`recyclic_findings` — the mapping against a live Recyclic (ids exist, registers and operators not
  in live use, what closing needs: the PIN and Recyclic's Paheko close mapping, and the outbox);
* :func:`dry_run` — the mapping replayed over sessions Paheko already holds: per session what would be
  forwarded, left out and held, with totals (nothing is sent anywhere).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from receiver.sinks.recyclic.mapping.config import MEMBERSHIP, UNREPRESENTABLE, Mapping, local_currency_name, non_euro_cash
from receiver.sinks.recyclic.mapping.mapper import MappingHeld, euros, map_session
from receiver.sinks.recyclic.mapping.model import MappedSession
from receiver.sinks.recyclic.mapping.suggest import PahekoNames, unmapped
from receiver.sinks.recyclic.profiles import parse_sale_note
from receiver.reread.snapshot import METHOD_CASH, SessionSnapshot

if TYPE_CHECKING:
    from receiver.sinks.recyclic.client import RecyclicClient

Level = Literal["problem", "warning"]
#: What :func:`~receiver.sinks.recyclic.mapping.suggest.unmapped` lines are about → the policy that decides.
UNMAPPED_POLICY = (("location", "unknown_location"), ("payment method", "unknown_method"),
                   ("category", "unknown_category"), ("operator", "unknown_operator"), ("", "unknown_location"))


@dataclass(frozen=True)
class Finding:
    level: Level
    text: str


def settings_findings(mapping: Mapping, *, pin_configured: bool | None) -> list[Finding]:
    """What the mapping's own settings say, without reading Paheko or Recyclic (``check-config`` prints
    these). ``pin_configured``: None when the sink is not Recyclic (closing does not apply)."""
    out = []
    for name, code in sorted(mapping.methods.items()):
        if code == "cash" and local_currency_name(name):
            out.append(Finding("problem", f"payment method {name!r} is mapped to cash, Recyclic's euro cash, but its "
                                          "name says local currency: its float would be added to the euros and its "
                                          "takings merged with them. Map it to a Recyclic payment method of its own "
                                          "(a super-admin creates one), or remove the line (its tickets then hold)."))
    held = [k for k in UNREPRESENTABLE if getattr(mapping.policies, k) == "hold"]
    if held:
        out.append(Finding("warning", f"policies {', '.join(held)} = \"hold\": every session with such a line or "
                                      "payment waits for a person (Recyclic cannot represent them; \"skip\" forwards "
                                      "the rest and records what is left out). `mapping check --dry-run` shows which "
                                      "sessions."))
    if pin_configured is None:
        return out
    if not mapping.close_session:
        out.append(Finding("warning", "close_session = false: every forwarded session stays OPEN in Recyclic. An open "
                                      "session blocks any live opening of its register and of its operator (400 « Une "
                                      "session est déjà ouverte… »), and the cash count and its variance never reach "
                                      "Recyclic. Close them by hand in Recyclic, or set close_session = true."))
    elif mapping.profile == "v2":
        if not pin_configured:
            out.append(Finding("problem", "close_session = true needs the Recyclic user's 4-digit step-up PIN: add "
                                          "pin = \"NNNN\" to this source's [sink] (the user sets it in Recyclic, "
                                          "PUT /v1/users/me/pin). Without it every session is held at its close."))
        out.append(Finding("warning", "each close queues an accounting item in Recyclic's Paheko outbox; the "
                                      "receiver rejects it right after the close (Paheko's caisse already booked "
                                      "the session). Never give that Recyclic instance a Paheko URL while items "
                                      "are pending: they would be booked a second time in Paheko. Closing also "
                                      "needs a Paheko close mapping for the site in Recyclic (`mapping check`)."))
    return out


def paheko_findings(source: str, names: PahekoNames, mapping: Mapping, *, pin_configured: bool | None) -> list[Finding]:
    """Paheko's names against the mapping, then :func:`settings_findings`."""
    out = []
    for line in unmapped(names, mapping):
        policy = next(p for prefix, p in UNMAPPED_POLICY if line.startswith(prefix))
        if getattr(mapping.policies, policy) == "skip":
            out.append(Finding("warning", f"unmapped: {line} — left out and recorded (policies.{policy} = \"skip\")"))
        else:
            out.append(Finding("problem", f"unmapped: {line}"))
    for name, kind in names.methods:
        if mapping.methods.get(name) == "cash" and kind == METHOD_CASH and not local_currency_name(name):
            why = non_euro_cash(name, kind, names.accounts.get(name))
            if why:
                out.append(Finding("warning", f"payment method {name!r} is mapped to cash but is {why}."))
    return out + settings_findings(mapping, pin_configured=pin_configured)


# --- against a live Recyclic ----------------------------------------------------------------------------

#: Said with every "in live use" finding: an empty session may be one the receiver left behind.
EMPTY_HINT = (" (An empty open session the receiver left after a lost answer looks the same: closing it in "
              "Recyclic deletes it.)")


def _session_reader(client: RecyclicClient) -> Callable[[str], dict]:
    """``GET cash-sessions/{id}`` (with its sales), once per session however often it is asked for."""
    read: dict[str, dict] = {}

    def session(session_id: str) -> dict:
        if session_id not in read:
            data = client.get(f"cash-sessions/{session_id}")
            read[session_id] = data if isinstance(data, dict) else {}
        return read[session_id]

    return session


def _replayed(session: dict) -> bool:
    """A session the receiver made: it holds sales, each carrying a Paheko note (v2). An empty session, or
    one with a cashier's sales, counts as live use."""
    sales = [s for s in session.get("sales") or [] if isinstance(s, dict)]
    return bool(sales) and all(parse_sale_note(s.get("note")) for s in sales)

def recyclic_findings(mapping: Mapping, client: RecyclicClient) -> list[Finding]:
    """Check the mapping's ids against Recyclic and what closing needs; refuse a register or operator in live
    use unless ``mapping.allow_live``: an open session (empty ones included: Recyclic's list hides them
    unless ``include_empty``, its register status shows them) that the receiver did not make — not every
    sale carries a Paheko note."""
    from receiver.sinks.recyclic.sink import list_sessions

    _session = _session_reader(client)
    out: list[Finding] = []
    categories = {c.id: c for c in client.categories()}
    for name, target in sorted(mapping.categories.items()):
        if target == MEMBERSHIP:
            continue
        category = categories.get(target)
        if category is None:
            out.append(Finding("problem", f"category {name!r} → {target}: no such category in Recyclic "
                                          "(Recyclic would store the text as is)."))
        elif not category.is_active:
            out.append(Finding("warning", f"category {name!r} → {category.name!r} is inactive in Recyclic."))
    codes = {m.code.lower() for m in client.payment_methods()}
    for name, code in sorted(mapping.methods.items()):
        if code not in codes:
            out.append(Finding("problem", f"payment method {name!r} → {code!r}: Recyclic has no such code "
                                          f"({', '.join(sorted(codes))}); its sales would be refused (400)."))
    sites = {s.id: s for s in client.sites()}
    registers = {r.id: r for r in client.registers()}
    places = [(label, place) for label, place in sorted(mapping.locations.items())]
    if mapping.no_location:
        places.append(("(no location)", mapping.no_location))
    operators = {*mapping.operators.values(), *([mapping.default_operator] if mapping.default_operator else [])}
    live_word = "refused" if not mapping.allow_live else "accepted (allow_live = true)"
    for label, place in places:
        if place.site_id not in sites:
            out.append(Finding("problem", f"location {label!r}: site {place.site_id} does not exist in Recyclic."))
            continue
        if place.register_id is None:
            out.append(Finding("warning", f"location {label!r}: no register; sessions open on the site alone. A "
                                          "register kept for deferred entry is better (Recyclic › postes de caisse, "
                                          "« caisses différées »)."))
            continue
        register = registers.get(place.register_id)
        if register is None or register.site_id not in (None, place.site_id):
            out.append(Finding("problem", f"location {label!r}: register {place.register_id} is not a register of "
                                          f"site {sites[place.site_id].name!r} in Recyclic."))
            continue
        session_id = client.open_session_of_register(register.id)
        if session_id:
            session = _session(session_id)
            if not _replayed(session):
                out.append(Finding("warning" if mapping.allow_live else "problem",
                                   f"location {label!r}: register {register.name!r} is in live use (session "
                                   f"{session_id} open by {session.get('operator_name') or session.get('operator_id')}"
                                   f"{', empty' if not session.get('sales') else ''}): {live_word}. Replayed "
                                   "sessions would be refused while it is open, and one left open would lock that "
                                   "till. Use a register kept for deferred entry." + EMPTY_HINT))
        if not register.enable_deferred:
            out.append(Finding("warning", f"location {label!r}: register {register.name!r} is not flagged for "
                                          "deferred entry (enable_deferred) in Recyclic."))
    for operator in sorted(operators):
        opened = [_session(row["id"]) for row in list_sessions(client, status="open", operator_id=operator)]
        live = [r for r in opened if not _replayed(r)]
        if live:
            registers_named = ", ".join(sorted({registers[r["register_id"]].name if r.get("register_id") in registers
                                                else str(r.get("register_id")) for r in live}))
            who = live[0].get("operator_name") or operator
            out.append(Finding("warning" if mapping.allow_live else "problem",
                               f"operator {operator} ({who}) has {len(live)} open session(s) not made by the receiver "
                               f"({registers_named}): a cashier in live use, {live_word}. A replayed session under "
                               "their account blocks their next live opening: use a user kept for deferred entry."
                               + EMPTY_HINT))
    if mapping.close_session and mapping.profile == "v2":
        for site_id in sorted({p.site_id for _, p in places if p.site_id in sites}):
            rows = [r for r in client.close_mappings(site_id) if r.get("enabled", True)]
            site_registers = {p.register_id for _, p in places if p.site_id == site_id}
            if not any(r.get("register_id") in (None, *site_registers) for r in rows):
                out.append(Finding("problem", f"site {sites[site_id].name!r} has no Paheko close mapping in Recyclic: "
                                              "every close would be refused (409 PAHEKO_SYNC_FINAL_ACTION_REFUSED). "
                                              "A Recyclic admin creates it: POST /v1/admin/paheko-mappings/cash-session-"
                                              f"close {{\"site_id\": \"{site_id}\", \"register_id\": null, "
                                              "\"destination_params\": {\"id_year\": 1, \"debit\": \"530\", "
                                              "\"credit\": \"707\"}} (Paheko's year id and accounts)."))
    return out


# --- replaying the mapping over Paheko's sessions -------------------------------------------------------


@dataclass
class SessionRun:
    session_id: int
    snapshot: SessionSnapshot | None
    mapped: MappedSession | None = None
    held: list[str] = field(default_factory=list)
    unreadable: str | None = None


@dataclass
class DryRunTotals:
    sessions: int = 0
    forwarded_sessions: int = 0
    held_sessions: int = 0
    unreadable: int = 0
    #: [Paheko, forwarded, left out] for line totals (cents) and weight (grams)
    cents: list[int] = field(default_factory=lambda: [0, 0, 0])
    grams: list[int] = field(default_factory=lambda: [0, 0, 0])
    sales: int = 0
    tabs: int = 0
    by_method: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0]))
    by_kind: Counter = field(default_factory=Counter)


def dry_run(runs: list[SessionRun]) -> tuple[list[str], DryRunTotals]:
    """Lines to print, and the totals, for sessions mapped (or held) without sending anything."""
    lines, t = [], DryRunTotals()
    for run in runs:
        t.sessions += 1
        if run.unreadable:
            t.unreadable += 1
            lines.append(f"session {run.session_id}: cannot be read from Paheko: {run.unreadable}")
            continue
        s = run.snapshot
        assert s is not None
        head = f"session {run.session_id} ({s.opened:%Y-%m-%d %H:%M}, {len(s.tabs)} tickets)"
        t.tabs += len(s.tabs)
        t.cents[0] += s.totals.items_total
        t.grams[0] += s.totals.weight_grams
        if run.held:
            t.held_sessions += 1
            lines.append(f"{head}: HELD, {euros(s.totals.items_total)} and {s.totals.weight_grams} g wait:")
            lines += [f"    {reason}" for reason in run.held]
            for mid, amount in s.totals.payments_by_method.items():
                name = s.methods[mid].name if mid in s.methods else f"method {mid}"
                t.by_method[name][0] += amount
            continue
        m = run.mapped
        assert m is not None
        r = m.reconciliation
        t.forwarded_sessions += 1
        t.sales += len(m.sales)
        for row, tally in ((t.cents, r.items_cents), (t.grams, r.weight_grams)):
            row[1] += tally.forwarded
            row[2] += tally.skipped
        for tally in r.payments:
            row = t.by_method[tally.method_name or f"method {tally.method_id}"]
            row[0] += tally.paheko
            row[1] += tally.forwarded
            row[2] += tally.skipped
        action = ("nothing to send" if m.opening is None or not m.sales else
                  f"{len(m.sales)} sale(s), {euros(r.items_cents.forwarded)}, {r.weight_grams.forwarded} g"
                  + (", then closed" if m.closing else ", left OPEN in Recyclic"))
        lines.append(f"{head}: forwarded {action}")
        if m.skipped:
            kinds = Counter(p.kind for p in m.skipped)
            t.by_kind.update(kinds)
            lines.append(f"    left out: {euros(r.items_cents.skipped)} of lines, {r.weight_grams.skipped} g ("
                         + ", ".join(f"{k} ×{n}" for k, n in sorted(kinds.items())) + ")")
            for part in m.skipped:
                what = (f"ticket {part.tab_id} line {part.item_id}" if part.item_id is not None else
                        f"ticket {part.tab_id} payment {part.payment_id} ({part.method})")
                lines.append(f"      {what}: {euros(part.amount_cents)}, {part.weight_grams} g — {part.reason}")
    return lines, t


def totals_lines(t: DryRunTotals) -> list[str]:
    out = [f"total: {t.sessions} session(s): {t.forwarded_sessions} would be forwarded ({t.sales} sales), "
           f"{t.held_sessions} held" + (f", {t.unreadable} unreadable" if t.unreadable else ""),
           _equation("lines: ", t.cents, euros), _equation("weight:", t.grams, lambda g: f"{g} g")]
    out += [_equation(f"{name}:", row, euros) for name, row in sorted(t.by_method.items())]
    if t.by_kind:
        out.append("  left out by case: " + ", ".join(f"{k} ×{n}" for k, n in sorted(t.by_kind.items())))
    return out


def _equation(label: str, row: list[int], show) -> str:
    paheko, forwarded, left = row
    return (f"  {label} Paheko {show(paheko)} = forwarded {show(forwarded)} + left out {show(left)}"
            f" + held {show(paheko - forwarded - left)}")


def replay(snapshot: SessionSnapshot, mapping: Mapping) -> SessionRun:
    run = SessionRun(snapshot.session_id, snapshot)
    try:
        run.mapped = map_session(snapshot, mapping)
    except MappingHeld as held:
        run.held = held.reasons
    return run
