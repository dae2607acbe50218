"""``paheko-recyclic ledger …``: look at (and act on) what the ledger holds."""

from __future__ import annotations

import json
from datetime import datetime, tzinfo

import click

from receiver.commands.context import current_app_services
from receiver.ledger import Entry, State
from receiver.sinks.registry import kind_of


@click.group("ledger")
def ledger_group() -> None:
    """Inspect the ledger: every session the receiver knows and where it stands."""


def _zone(source: str) -> tzinfo | None:
    cfg = current_app_services().config.sources.get(source)
    return cfg.timezone if cfg else None


def local(moment: datetime | None, zone: tzinfo | None) -> str:
    """A ledger time in the source's time zone (or the machine's), readable."""
    if moment is None:
        return "-"
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")


def table(headers: list[str], rows: list[list[str]], *, width: int | None = None, wrap: int | None = None) -> str:
    """Columns aligned; the ``wrap`` column (default: the last) wraps on words to fit ``width``
    (default: the terminal's, 100 when not a terminal) instead of being cut."""
    import shutil
    import textwrap

    width = width or shutil.get_terminal_size((100, 24)).columns
    wrap = len(headers) - 1 if wrap is None else wrap
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    others = sum(w for i, w in enumerate(widths) if i != wrap) + 2 * (len(headers) - 1)
    widths[wrap] = max(len(headers[wrap]), min(widths[wrap], max(24, width - others)))
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [line(headers), line(["-" * w for w in widths])]
    for row in rows:
        pieces = textwrap.wrap(row[wrap], widths[wrap], break_on_hyphens=False) or [""]
        out.append(line([*row[:wrap], pieces[0], *row[wrap + 1:]]))
        out.extend(line(["" if i != wrap else piece for i in range(len(headers))]) for piece in pieces[1:])
    return "\n".join(out)


@ledger_group.command("list")
@click.option("--source", help="Only this source.")
@click.option("--state", "states", multiple=True, type=click.Choice([s.value for s in State if s != State.UNKNOWN]),
              help="Only entries in this state (repeatable).")
@click.option("--limit", default=50, show_default=True, help="How many entries, most recent first.")
def list_entries(source: str | None, states: tuple[str, ...], limit: int) -> None:
    """List ledger entries, most recently changed first (times in each source's time zone)."""
    entries = current_app_services().ledger.list(source=source, states=[State(s) for s in states], limit=limit,
                                                 documents=False)
    if not entries:
        click.echo("The ledger is empty." if not (source or states) else "No entry matches.")
        return
    rows = [
        [str(e.id), e.source, str(e.session_id), e.state.value, local(e.created_at, _zone(e.source)),
         local(e.updated_at, _zone(e.source)), str(e.attempts), e.reason or ""]
        for e in entries
    ]
    click.echo(table(["entry", "source", "session", "state", "first seen", "updated", "tries", "reason"], rows))


def find_entry(ref: str, source: str | None) -> Entry:
    """An entry by ledger id (``12``) or by ``SOURCE:SESSION`` (``lab:2``)."""
    ledger = current_app_services().ledger
    if ":" in ref:
        name, _, session = ref.partition(":")
        entry = ledger.get(name, int(session)) if session.isdigit() else None
    elif source:
        entry = ledger.get(source, int(ref)) if ref.isdigit() else None
    else:
        entry = ledger.get_by_id(int(ref)) if ref.isdigit() else None
    if entry is None:
        raise click.ClickException(f"no ledger entry {ref!r} (use an entry id, or SOURCE:SESSION such as lab:2)")
    return entry


@ledger_group.command("show")
@click.argument("ref")
@click.option("--source", help="Read REF as a Paheko session id of this source.")
@click.option("--raw", is_flag=True, help="Also print the raw body of each notification.")
def show(ref: str, source: str | None, raw: bool) -> None:
    """Show one entry: state, reason, history and notifications. REF is an entry id or SOURCE:SESSION."""
    svc = current_app_services()
    entry = find_entry(ref, source)
    zone = _zone(entry.source)
    click.echo(f"Entry {entry.id}: source {entry.source}, Paheko session {entry.session_id}")
    click.echo(f"  state:    {entry.state.value} ({entry.state.label})")
    if entry.reason:
        click.echo(f"  reason:   {entry.reason}")
    if entry.last_error:
        click.echo(f"  error:    {entry.last_error}")
    click.echo(f"  origin:   {entry.origin}; tries {entry.attempts}; next try {local(entry.next_attempt_at, zone)}")
    click.echo(f"  summary:  {json.dumps(entry.summary, ensure_ascii=False)}")
    for line in _both_sides(entry):
        click.echo(line)
    click.echo("History:")
    for change in svc.ledger.history(entry.id):
        arrow = f"{change['from_state'] or '∅'} → {change['to_state']}"
        click.echo(f"  {local(change['at'], zone)}  {arrow}  {change['reason'] or ''}".rstrip())
    forwards = svc.ledger.forwards_of(entry.id)
    if forwards:
        click.echo("Sent to the sink (Paheko id → destination id):")
        for (kind, paheko_id), f in sorted(forwards.items(), key=lambda item: (item[0][0] != "session", item[0])):
            detail = f"  {f.detail}" if f.detail else ""
            click.echo(f"  {kind:<8} {paheko_id:<6} {f.status:<7} {f.sink_id or '-'}{detail}")
    notes = svc.ledger.notes_of(entry.id)
    if notes:
        click.echo("Notes:")
        for note in notes:
            click.echo(f"  {local(note['at'], zone)}  {note['text']}")
    click.echo("Notifications:")
    for n in svc.ledger.notifications_of(entry.id):
        click.echo(f"  {local(n['received_at'], zone)}  {n['origin']:<8} {n['outcome']:<9} from {n['remote_addr'] or '-'}")
        if raw and n["raw_body"]:
            click.echo(f"    {n['raw_body']}")


def amount(cents: int) -> str:
    """An amount for English output: ``-3.00 €``."""
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d} €"


def _both_sides(entry: Entry) -> list[str]:
    """What Paheko holds, what was left out and whether Paheko = sent + left out (what was sent, with
    the destination's ids, is listed by ``show`` from the forward log)."""
    from marshmallow import ValidationError

    from receiver.sinks.recyclic.mapping.model import load_mapped

    lines: list[str] = []
    totals = (entry.snapshot or {}).get("totals") or {}
    if entry.snapshot:
        lines.append(f"Paheko: {len(entry.snapshot.get('tabs', []))} ticket(s), items {amount(totals.get('items_total', 0))}")
    try:
        mapped = load_mapped(entry.mapped) if entry.mapped else None
    except (ValidationError, KeyError, TypeError, ValueError):
        mapped = None  # another sink's document: nothing to reconcile here
    if mapped and mapped.skipped:
        lines.append("Left out (recorded, not sent):")
        for part in mapped.skipped:
            where = f"ticket {part.tab_id}" if part.tab_id is not None else "session"
            lines.append(f"  {where:<10} {amount(part.amount_cents):>10}  {part.reason}")
    if mapped:
        r = mapped.reconciliation
        lines.append("Reconciliation (Paheko = sent + left out): " + ("balanced" if r.balanced else "NOT BALANCED"))
        figures = [("tickets", r.tabs, str), ("items", r.items_cents, amount),
                   ("weight", r.weight_grams, lambda g: f"{g / 1000:.3f} kg")]
        figures += [(f"payments {m.method_name or m.method_id}", m, amount) for m in r.payments]
        for label, tally, show in figures:
            mark = "" if tally.balanced else "  ← differs"
            lines.append(f"  {label:<24} {show(tally.paheko):>12} = {show(tally.forwarded):>12} + {show(tally.skipped)}{mark}")
    return lines


def _select(refs: tuple[str, ...], source: str | None, states: tuple[str, ...], allowed: tuple[State, ...]) -> list[Entry]:
    """Entries named by REF, or all entries matching --source/--state, restricted to ``allowed`` states."""
    if refs:
        entries = [find_entry(ref, source) for ref in refs]
    elif source or states:
        entries = current_app_services().ledger.list(source=source, states=[State(s) for s in states] or allowed,
                                                     limit=100_000, documents=False)
    else:
        raise click.UsageError("name entries (ID or SOURCE:SESSION) or select them with --source/--state")
    skipped = [e for e in entries if e.state not in allowed]
    for e in skipped:
        click.echo(f"  skipped entry {e.id} ({e.source}:{e.session_id}): it is {e.state.value}")
    return [e for e in entries if e.state in allowed]


def _bulk_options(fn):
    fn = click.option("--state", "states", multiple=True, type=click.Choice([s.value for s in State if s != State.UNKNOWN]),
                      help="Act on every entry in this state (repeatable).")(fn)
    fn = click.option("--source", help="Only entries of this source (or read REFs as its session ids).")(fn)
    return click.argument("refs", nargs=-1)(fn)


@ledger_group.command("retry")
@_bulk_options
def retry(refs, source, states) -> None:
    """Make failed or dead entries due now (the worker picks them up at once)."""
    ledger = current_app_services().ledger
    chosen = _select(refs, source, states, (State.FAILED, State.DEAD))
    for e in chosen:
        ledger.transition(e.id, State.FAILED, expect=[State.FAILED, State.DEAD], reason=e.reason,
                          next_attempt_at=None, attempts=0 if e.state == State.DEAD else e.attempts)
    click.echo(f"{len(chosen)} entr{'y' if len(chosen) == 1 else 'ies'} due now.")


@ledger_group.command("release")
@_bulk_options
def release(refs, source, states) -> None:
    """Send held, failed or dead entries through the whole pipeline again (after fixing the cause).

    The session is re-read and re-mapped; what already reached Recyclic is never sent twice.
    """
    ledger = current_app_services().ledger
    chosen = _select(refs, source, states, (State.HELD, State.FAILED, State.DEAD))
    for e in chosen:
        ledger.transition(e.id, State.NOTIFIED, expect=[State.HELD, State.FAILED, State.DEAD],
                          reason="Libérée par un opérateur.", snapshot=None, mapped=None, attempts=0,
                          next_attempt_at=None)
    click.echo(f"{len(chosen)} entr{'y' if len(chosen) == 1 else 'ies'} released.")


@ledger_group.command("resend")
@_bulk_options
def resend(refs, source, states) -> None:
    """Forward entries again, to the sink configured now (e.g. after replacing a file sink by Recyclic).

    Each session is re-read, re-mapped and delivered again. Safe: what the current destination already
    holds is found there and not sent twice (Recyclic: by its sessions and the sales' notes; a file: by the
    document id in it; a webhook: the same webhook-id, for the receiver to deduplicate).

    Example: paheko-recyclic ledger resend --source lab --state forwarded
    """
    svc = current_app_services()
    ledger = svc.ledger
    chosen = _select(refs, source, states, (State.FORWARDED, State.HELD, State.FAILED, State.DEAD))
    for e in chosen:
        sink = svc.config.sources[e.source].sink if e.source in svc.config.sources else None
        if sink is None:
            click.echo(f"  skipped entry {e.id} ({e.source}:{e.session_id}): its source has no sink configured")
            continue
        kind = kind_of(sink)
        ledger.forget_documents(e.id)  # a document sink looks in its destination again; Recyclic keeps its map
        ledger.transition(e.id, State.NOTIFIED, reason=f"Renvoi demandé vers la destination actuelle ({kind}).",
                          snapshot=None, mapped=None, attempts=0, next_attempt_at=None)
    click.echo(f"{len(chosen)} entr{'y' if len(chosen) == 1 else 'ies'} queued for resending.")


@ledger_group.command("hold")
@_bulk_options
@click.option("--reason", default="Mise en attente par un opérateur.", show_default=True,
              help="Why (French: the Paheko admin sees it).")
def hold(refs, source, states, reason) -> None:
    """Stop the worker from touching entries until they are released."""
    ledger = current_app_services().ledger
    movable = (State.NOTIFIED, State.SNAPSHOT, State.MAPPED, State.FAILED, State.DEAD)
    chosen = _select(refs, source, states, movable)
    for e in chosen:
        ledger.transition(e.id, State.HELD, expect=movable, reason=reason)
    click.echo(f"{len(chosen)} entr{'y' if len(chosen) == 1 else 'ies'} held.")
