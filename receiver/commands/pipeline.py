"""``paheko-recyclic poll | worker | status | backfill``: run and watch the pipeline."""

from __future__ import annotations

import shutil
import signal
import sys
import threading
from datetime import datetime

import click

from receiver.commands.context import current_app_services, progress_bar, source_named
from receiver.commands.ledger import local, table
from receiver.ledger import State
from receiver.ledger.store import utcnow


def _sources(name: str | None):
    sources = current_app_services().config.sources
    return list(sources.values()) if name is None else [source_named(sources, name)]


def _worker(sinks=None):
    from receiver.worker import Worker

    svc = current_app_services()
    return Worker(svc.config, svc.ledger, metrics=svc.metrics, sinks=sinks)


def _poll_with_progress(src, worker, *, first: bool) -> object:
    """One poll pass; on the first pass at a terminal, a progress bar when the history to scan is long
    (an old till). Counting costs Paheko a request, so later passes and logs skip it."""
    from receiver.reread.poller import PAGE, count_to_scan, poll_source

    client = worker.client(src)
    if not (first and sys.stderr.isatty()):
        return poll_source(src, client, worker.ledger)
    total = count_to_scan(src, client, worker.ledger)
    if total <= PAGE:
        return poll_source(src, client, worker.ledger)
    with progress_bar(length=total, label=f"{src.name}: scanning", show_pos=True) as bar:
        return poll_source(src, client, worker.ledger, progress=bar.update)


@click.command()
@click.option("--once", is_flag=True, help="One pass, then exit (default: a pass every [worker] poll_interval until Ctrl-C).")
@click.option("--source", help="Only this source.")
def poll(once: bool, source: str | None) -> None:
    """Find closed sessions in Paheko that no notification announced, and queue them.

    The worker already does this every [worker] poll_interval seconds; run it by hand to check a
    source (--once), or alone to queue sessions without processing them. Queued sessions are
    processed by the worker.
    """
    from receiver.reread.client import PahekoError

    worker = _worker()
    stop = threading.Event()
    if not once:
        _stop_on_signals(stop)
    failed, first = False, True
    try:
        while True:
            for src in _sources(source):
                try:
                    report = _poll_with_progress(src, worker, first=first)
                except PahekoError as exc:
                    click.echo(f"{src.name}: poll failed: {exc}", err=True)
                    failed = True
                    continue
                found = ", ".join(map(str, report.found)) or "none"
                click.echo(f"{src.name}: scanned {report.scanned} session(s) from id {report.watermark_before} "
                           f"in {report.requests} request(s); new: {found}; next pass starts at id {report.watermark_after}"
                           + (f", watching open session(s) {', '.join(map(str, report.open))}" if report.open else ""))
            first = False
            if once or stop.wait(worker.config.worker.poll_interval):
                break
    finally:
        worker.close()
    if failed and once:
        raise SystemExit(1)


def _stop_on_signals(stop: threading.Event) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())


@click.command()
@click.option("--once", is_flag=True, help="Poll every source, process everything due, then exit.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1, 32),
              help="Entries of one source processed in parallel (each source has its own threads; "
                   "with --once, entries processed in parallel).")
def worker(once: bool, threads: int) -> None:
    """Drive ledger entries to Recyclic: re-read, map, forward; and poll every source.

    Each source has its own threads, so a slow or failing Paheko only delays its own sessions.
    Safe to run several times at once (processes, machines sharing a PostgreSQL ledger): an entry is
    claimed by one worker at a time. Stops within 10 s on SIGTERM / Ctrl-C.
    """
    from receiver.sinks.registry import SinkPool

    svc = current_app_services()
    if once:
        sinks = SinkPool(svc.ledger)  # one per process: threads share each sink and its login
        workers = [_worker(sinks) for _ in range(threads)]
        counts = [0] * threads
        try:
            workers[0].poll_due_sources(force=True)

            def drain(i: int) -> None:
                counts[i] = workers[i].run_once()

            runners = [threading.Thread(target=drain, args=(i,), name=f"worker-{i}") for i in range(threads)]
            for runner in runners:
                runner.start()
            for runner in runners:
                runner.join()
        finally:
            for w in workers:
                w.close()
            sinks.close()
        steps = sum(counts)
        click.echo(f"Processed {steps} entr{'y' if steps == 1 else 'ies'}"
                   + (f" with {threads} threads." if threads > 1 else "."))
        return
    from receiver.runner import STOP_GRACE, Runner
    from receiver.worker import Worker

    stop = threading.Event()
    _stop_on_signals(stop)
    runner = Runner(svc.config, svc.ledger, threads=threads,
                    make_worker=lambda **kw: Worker(svc.config, svc.ledger, metrics=svc.metrics, **kw)).start()
    click.echo(f"Worker running: {len(svc.config.sources)} source(s), {runner.threads} thread(s) each; "
               "Ctrl-C or SIGTERM stops it.")
    while not stop.wait(3600):
        pass
    if runner.stop(STOP_GRACE):
        click.echo("Worker stopped.")
    else:
        click.echo(f"Worker stopped after {STOP_GRACE:.0f} s with steps in hand; the next start resumes them.")


def _age(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    seconds = int((utcnow() - moment).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


@click.command()
def status() -> None:
    """Per source: last notification, last poll, pending, held (with reasons), failed, dead, oldest pending.

    The command to run when someone asks "did yesterday's till reach Recyclic?".
    """
    svc = current_app_services()
    overview = svc.ledger.overview()
    for src in svc.config.sources.values():
        info = overview.get(src.name, {"states": {}, "oldest_pending": None, "last_notification": None})
        states = info["states"]
        last_poll = svc.ledger.get_value(f"last_poll:{src.name}")
        pending = sum(states.get(s.value, 0) for s in (State.NOTIFIED, State.SNAPSHOT, State.MAPPED))
        click.echo(f"Source {src.name} ({src.paheko.url})")
        if src.sink is None:
            click.echo("  sink: none configured — sessions are re-read, then wait (« aucune destination configurée »)"
                       f"; add [sources.{src.name}.sink] and restart the worker")
        click.echo(f"  last notification: {local(info['last_notification'], src.timezone)}"
                   f"   last poll: {local(datetime.fromisoformat(last_poll), src.timezone) if last_poll else '-'}")
        click.echo(f"  forwarded {states.get('forwarded', 0)}, pending {pending}, failed {states.get('failed', 0)}, "
                   f"held {states.get('held', 0)}, dead {states.get('dead', 0)}; "
                   f"oldest pending: {_age(info['oldest_pending'])}")
        stuck = svc.ledger.list(source=src.name, states=[State.HELD, State.FAILED, State.DEAD], limit=20,
                                documents=False)
        if stuck:
            rows = [[str(e.session_id), e.state.value, local(e.updated_at, src.timezone), e.reason or ""]
                    for e in stuck]
            width = shutil.get_terminal_size((100, 24)).columns - 2
            click.echo("\n".join("  " + line for line in table(["session", "state", "since", "reason"], rows,
                                                                 width=width).splitlines()))
        notes = svc.ledger.recent_notes(src.name, limit=10)
        if notes:
            click.echo("  notes (what the sink did that needs a look, newest first):")
            for session_id, at, text in notes:
                click.echo(f"    session {session_id}, {local(at, src.timezone)}: {text}")


@click.command()
@click.option("--source", required=True, help="The source to walk.")
@click.option("--since", required=True, type=click.DateTime(["%Y-%m-%d"]), help="First closing day (local), YYYY-MM-DD.")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]),
              help="Last closing day (local), inclusive. Default: today in the source's time zone.")
def backfill(source: str, since: datetime, until: datetime | None) -> None:
    """Send every session closed in a date range through the normal pipeline.

    Idempotent: sessions already forwarded are reported, never sent again.
    """
    from receiver.reread.client import PahekoError, sql_text

    [src] = _sources(source)
    w = _worker()
    last_day = (until.date() if until else datetime.now(src.timezone).date()).isoformat() + " 23:59:59"
    try:
        ids: list[int] = []
        after = 0
        while True:
            rows = w.client(src).sql(
                "SELECT id FROM plugin_pos_sessions WHERE closed IS NOT NULL"
                f" AND closed >= {sql_text(since.date().isoformat())} AND closed <= {sql_text(last_day)}"
                f" AND id > {after} ORDER BY id LIMIT 500"
            ).rows
            ids += [r["id"] for r in rows]
            if len(rows) < 500:
                break
            after = rows[-1]["id"]
        click.echo(f"{len(ids)} closed session(s) in Paheko between {since.date()} and {last_day[:10]}.")
        outcome: dict[str, list[int]] = {}
        with progress_bar(ids, label="Backfilling", show_pos=True) as bar:
            for session_id in bar:
                recorded = w.ledger.record_notification(src.name, session_id, {}, origin="backfill")
                entry = recorded.entry
                if entry.state == State.FORWARDED and not recorded.is_new:
                    outcome.setdefault("already forwarded", []).append(session_id)
                    continue
                claimed = w.claim(entry_id=entry.id)
                if claimed is not None:
                    entry = w.process_claimed(claimed)
                outcome.setdefault(entry.state.value, []).append(session_id)
    except PahekoError as exc:
        raise click.ClickException(f"Paheko: {exc}") from None
    finally:
        w.close()
    for state, sessions in sorted(outcome.items()):
        click.echo(f"  {state}: {len(sessions)} — sessions {', '.join(map(str, sessions[:30]))}"
                   + (" …" if len(sessions) > 30 else ""))
