"""``paheko-recyclic report``: does Recyclic hold everything the till sold this month?"""

from __future__ import annotations

import sys
from functools import partial
from datetime import date, datetime, timedelta
from pathlib import Path

import click

from receiver.commands.context import current_app_services, progress_bar, source_named
from receiver.report.html import render_html
from receiver.report.ledger import load_sessions
from receiver.report.reconcile import Report, month_last_day, reconcile
from receiver.report.render import render_csv, render_text


def month_bounds(text: str) -> tuple[date, date]:
    """``2025-09`` → (2025-09-01, 2025-09-30)."""
    try:
        first = datetime.strptime(text, "%Y-%m").date()
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a month like 2025-09", param_hint="--month") from None
    return first, month_last_day(first)


def period(month: str | None, since: datetime | None, until: datetime | None, today: date) -> tuple[date, date]:
    if month and (since or until):
        raise click.UsageError("Give either --month or --since/--until, not both.")
    if month:
        return month_bounds(month)
    if since is None:
        first = today.replace(day=1)
        return first, today if until is None else until.date()
    end = until.date() if until else today
    if end < since.date():
        raise click.UsageError("--until is before --since.")
    return since.date(), end


def open_in_paheko(source, since: date, until: date) -> tuple[list[tuple[int, date]], str | None]:
    """Sessions Paheko still has open, opened in the period (one ``/api/sql`` request); a note if unreachable."""
    from receiver.reread.client import PahekoClient, PahekoError, sql_text

    try:
        with PahekoClient(source.name, source.paheko, retries=1) as client:
            rows = client.sql(
                "SELECT id, opened FROM plugin_pos_sessions WHERE closed IS NULL"
                f" AND opened >= {sql_text(since.isoformat())}"
                f" AND opened <= {sql_text(until.isoformat() + ' 23:59:59')} ORDER BY id").rows
    except PahekoError as exc:
        return [], f"Paheko n'a pas pu être interrogé ({exc}) : les sessions encore ouvertes n'y sont pas listées."
    return [(row["id"], date.fromisoformat(str(row["opened"])[:10])) for row in rows], None


def recyclic_sink(source, ledger):
    """The source's Recyclic sink (read-only use: its client and its session listing); its logins count in
    the ledger with the worker's (Recyclic refuses the 11th login a minute from one address)."""
    from receiver.sinks.recyclic import RecyclicSinkConfig
    from receiver.sinks.recyclic.sink import RecyclicSink

    if not isinstance(source.sink, RecyclicSinkConfig):
        raise click.ClickException(f"--verify: source {source.name!r} does not forward to Recyclic.")
    return RecyclicSink(source.sink, ledger=ledger)


def run_verify(report: Report, sessions, source, ledger) -> None:
    from receiver.report.verify import sweep, verify
    from receiver.sinks.recyclic.sink import list_sessions

    sink = recyclic_sink(source, ledger)
    client = sink.client
    try:
        try:
            report.category_names.update({c.id: c.name for c in client.categories()})
        except Exception as exc:  # noqa: BLE001 — names are a nicety; the comparison still runs
            click.echo(f"Recyclic categories not read ({exc}); ids are shown.", err=True)
        with progress_bar(length=len(sessions), label="Reading Recyclic back") as bar:
            result = verify(sessions, client.get, progress=bar.update)
        sweep(sessions, source.name, report.since, report.until, source.timezone,
              partial(list_sessions, client), client.get, result)
    except Exception as exc:  # noqa: BLE001
        raise click.ClickException(f"--verify stopped: {exc}") from None
    finally:
        client.close()
    report.findings.extend(result.findings)
    click.echo(f"Verified against Recyclic: {result.sessions} session(s), {result.sales} sale(s), "
               f"{result.requests} request(s), {len(result.findings)} difference(s).", err=True)


@click.command()
@click.option("--source", help="The source (Paheko) to report on; optional when only one is configured.")
@click.option("--month", metavar="YYYY-MM", help="A calendar month, e.g. 2025-09.")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), help="First day (sessions by opening day), YYYY-MM-DD.")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), help="Last day, inclusive. Default: today.")
@click.option("--csv", "as_csv", is_flag=True, help="Print the figures as CSV (integer cents and grams) instead.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a self-contained HTML page with charts to this file.")
@click.option("--verify", is_flag=True, help="Read the sessions and sales back from Recyclic and compare.")
@click.option("--paheko/--no-paheko", "ask_paheko", default=True, show_default=True,
              help="Ask Paheko which sessions are still open (one read-only request).")
def report(source: str | None, month: str | None, since: datetime | None, until: datetime | None, as_csv: bool,
           html_path: Path | None, verify: bool, ask_paheko: bool) -> None:
    """Month reconciliation: per category, method and day, in kg and €, Paheko against Recyclic.

    \b
    Every figure is split: forwarded to Recyclic, left out on purpose (refunds, memberships, debt…), held
    (someone must act) or not yet forwarded; totals reconcile to the cent and the gram, and the first line
    says it in one sentence. Exit status 0 when everything is accounted for, 1 otherwise.
    \b
    Examples:
      paheko-recyclic report --source shop --month 2025-09
      paheko-recyclic report --source shop --since 2025-09-01 --until 2025-09-15 --csv > sept.csv
      paheko-recyclic report --source shop --month 2025-09 --html sept.html --verify
    """
    svc = current_app_services()
    src = source_named(svc.config.sources, source, only_one=True, error=click.UsageError)
    today = datetime.now(src.timezone).date()
    first, last = period(month, since, until, today)
    sessions = load_sessions(svc.ledger, src.name, first, last, src.timezone)
    opened, note = open_in_paheko(src, first, last) if ask_paheko else ([], None)
    if note:
        click.echo(note, err=True)
    result = reconcile(src.name, sessions, first, last, open_in_paheko=opened)
    if verify:
        run_verify(result, sessions, src, svc.ledger)
    if html_path is not None:
        stamp = f"Établi le {datetime.now(src.timezone):%d/%m/%Y à %H:%M} depuis le registre du récepteur" + (
            ", vérifié dans Recyclic." if verify else ".")
        html_path.write_text(render_html(result, generated=stamp), encoding="utf-8")
        click.echo(f"Wrote {html_path}.", err=True)
    click.echo(render_csv(result) if as_csv else render_text(result), nl=False)
    sys.exit(0 if result.balanced and not result.findings else 1)
