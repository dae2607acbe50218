"""``paheko-recyclic mapping suggest|check``: fill in and verify a source's mapping against Paheko."""

from __future__ import annotations

import click

from receiver.config import Secret, Source
from receiver.sinks.recyclic.client import RecyclicClient, RecyclicError, RecyclicRefused
from receiver.sinks.recyclic.config import RecyclicSinkConfig
from receiver.sinks.recyclic.mapping.check import (
    Finding, SessionRun, dry_run as render_dry_run, paheko_findings, recyclic_findings, replay, totals_lines,
)
from receiver.sinks.recyclic.mapping.suggest import RecyclicNames, read_paheko_names, render_suggestion
from receiver.reread.client import PahekoClient, PahekoError, sql_int
from receiver.reread.snapshot import SessionUnavailable, read_session


@click.group("mapping")
def mapping_group() -> None:
    """Relate a source's Paheko names (locations, operators, categories, methods) to Recyclic ids."""


def _source(name: str) -> Source:
    from receiver.commands.context import config_from_context, source_named

    return source_named(config_from_context().sources, name)


def _paheko_names(source: Source):
    try:
        with PahekoClient(source.name, source.paheko) as client:
            return read_paheko_names(client, source.paheko.first_session)
    except PahekoError as exc:
        raise click.ClickException(f"cannot read Paheko's reference data: {exc}") from None


@mapping_group.command("suggest")
@click.option("--source", "name", required=True, help="The source (a [sources.NAME] table).")
@click.option("--recyclic-url", help="Recyclic's API base URL, e.g. https://recyclic.example.org/api/v1.")
@click.option("--recyclic-user", help="A Recyclic admin user, to read categories, sites and registers.")
@click.option("--recyclic-password", envvar="RECYCLIC_PASSWORD", help="Its password (or $RECYCLIC_PASSWORD).")
def suggest(name: str, recyclic_url: str | None, recyclic_user: str | None, recyclic_password: str | None) -> None:
    """Print a [sources.NAME.mapping] section to review: current entries kept, exact matches filled in, the
    rest commented with Recyclic's closest candidates. Recyclic is read with the --recyclic-* options, or
    else with the source's Recyclic [sink]."""
    source = _source(name)
    recyclic = None
    if recyclic_url or recyclic_user or recyclic_password:
        if not (recyclic_url and recyclic_user and recyclic_password):
            raise click.UsageError("--recyclic-url, --recyclic-user and --recyclic-password go together")
        recyclic = _recyclic_names(recyclic_url, recyclic_user, recyclic_password)
    elif isinstance(source.sink, RecyclicSinkConfig):
        sink = source.sink
        recyclic = _recyclic_names(sink.url, sink.username, sink.password.reveal())
    click.echo(render_suggestion(name, _paheko_names(source), source.mapping, recyclic), nl=False)


def _recyclic_names(url: str, user: str, password: str) -> RecyclicNames:
    config = RecyclicSinkConfig(url=url.rstrip("/"), username=user, password=Secret(password))
    try:
        with RecyclicClient(config) as client:
            categories = [c for c in client.categories() if c.is_active]
            registers = client.registers()
            methods = client.payment_methods()
            return RecyclicNames(
                categories=tuple((c.id, c.name) for c in categories),
                sites=tuple((s.id, s.name) for s in client.sites()),
                registers=tuple((r.id, r.name, r.site_id) for r in registers),
                payment_codes=tuple(m.code.lower() for m in methods),
                parents={c.id: c.parent_id for c in categories},
                deferred=frozenset(r.id for r in registers if r.enable_deferred),
                labels={m.code.lower(): m.label for m in methods},
                users=tuple((u.id, u.username, u.role or "") for u in _users(client)),
                machine_user=user,
            )
    except RecyclicError as exc:
        raise click.ClickException(f"cannot read Recyclic's reference data: {exc}") from None


def _users(client: RecyclicClient):
    try:
        return client.users()
    except RecyclicRefused as exc:  # Recyclic 1.3 or a narrower role: no user listing, no proposal
        if exc.status in (404, 405):
            return []
        raise


@mapping_group.command("check")
@click.option("--source", "name", required=True, help="The source (a [sources.NAME] table).")
@click.option("--dry-run", is_flag=True,
              help="Also replay the mapping over the closed sessions Paheko holds: per session what would be "
                   "forwarded, left out and held, with totals. Nothing is sent.")
@click.option("--last", type=click.IntRange(min=1), default=None,
              help="With --dry-run: only the last N closed sessions (default: all from paheko.first_session).")
@click.option("--offline", is_flag=True, help="Do not contact Recyclic (ids, live use and closing not verified).")
def check(name: str, dry_run: bool, last: int | None, offline: bool) -> None:
    """Verify a source's mapping before anything is sent: Paheko names it lacks, local currency mapped to
    euro cash, policies that would hold sessions, closing (PIN, Recyclic's Paheko close mapping, the
    outbox), registers and operators in live use. Exit status 1 when a problem is found.

    \b
    Example:
      paheko-recyclic mapping check --source lab --dry-run --last 20
    """
    source = _source(name)
    sink = source.sink if isinstance(source.sink, RecyclicSinkConfig) else None
    findings = paheko_findings(name, _paheko_names(source), source.mapping,
                               pin_configured=None if sink is None else sink.pin is not None)
    if sink is not None and not offline:
        try:
            with RecyclicClient(sink) as client:
                findings += recyclic_findings(source.mapping, client)
        except RecyclicError as exc:
            findings.append(Finding("problem", f"cannot check the mapping against Recyclic: {exc}"))
    elif sink is None:
        findings.append(Finding("warning", "this source's sink is not Recyclic: ids, live use and closing are not "
                                           "verified against Recyclic."))
    for finding in findings:
        text = finding.text if finding.level == "problem" and finding.text.startswith("unmapped: ") \
            else f"{finding.level}: {finding.text}"
        click.echo(text)
    held = 0
    if dry_run:
        runs = _replay(source, last)
        lines, totals = render_dry_run(runs)
        click.echo("")
        click.echo(f"Dry run over {len(runs)} closed session(s) of source {name!r} (nothing sent):")
        for line in lines + totals_lines(totals):
            click.echo(line)
        held = totals.held_sessions + totals.unreadable
    problems = sum(f.level == "problem" for f in findings)
    warnings = len(findings) - problems
    if problems or held:
        raise click.exceptions.Exit(1)
    if any(f.text.startswith("unmapped: ") for f in findings):
        click.echo(f"No problem in the mapping of source {name!r}; the unmapped names above are left out by policy"
                   f" ({warnings} warning(s) above).")
    else:
        click.echo(f"The mapping of source {name!r} covers every location, operator, category and payment method"
                   + (f" ({warnings} warning(s) above)." if warnings else "."))


def _replay(source: Source, last: int | None) -> list[SessionRun]:
    since = sql_int(source.paheko.first_session)
    order, limit = ("DESC", f" LIMIT {sql_int(last)}") if last else ("ASC", "")
    runs = []
    try:
        with PahekoClient(source.name, source.paheko) as client:
            rows = client.sql(f"SELECT id FROM plugin_pos_sessions WHERE closed IS NOT NULL AND id >= {since} "
                              f"ORDER BY id {order}{limit}", complete=not limit).rows
            for session_id in sorted(int(r["id"]) for r in rows):
                try:
                    snapshot = read_session(client, session_id, source.timezone)
                except SessionUnavailable as exc:
                    runs.append(SessionRun(session_id, None, unreadable=str(exc)))
                    continue
                runs.append(replay(snapshot, source.mapping))
    except PahekoError as exc:
        raise click.ClickException(f"cannot read Paheko's sessions: {exc}") from None
    return runs
