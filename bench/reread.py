"""Benchmark: re-reading one session through /api/sql versus downloading the whole database.

On a copy of the real fixture database (a complete Paheko instance) plus a 50-item and a 5,000-item session,
served by the local Paheko stand-in over loopback HTTP, it prints per session: /api/sql requests, bytes
received and time to a validated snapshot (median of several runs); then the same data fetched the
"plain rows" way (one keyset-paged SELECT per list, the alternative to the JSON aggregates); then
GET /api/download of the whole database; and the ratios.

Then the reconciliation poll on a long history with one old till left open (issue 13 item 5): the
cost of a poll that finds nothing new (requests, bytes, time) as the history grows, and the memory
``ledger list`` needs for entries holding large documents.

Run: ``.venv/bin/python bench/reread.py [--runs N] [--history 5000]``
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from receiver.reread.client import PahekoClient  # noqa: E402
from receiver.reread.queries import LIST_COLUMNS, P  # noqa: E402
from receiver.reread.snapshot import read_session  # noqa: E402
from tests.paheko_db import PahekoDB, big_session, reference_data, served  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "paheko-caisse.sqlite"
PARIS = ZoneInfo("Europe/Paris")


def build(directory: Path) -> tuple[Path, dict[str, int]]:
    path = directory / "bench.sqlite"
    shutil.copy(FIXTURE, path)
    db = PahekoDB(path, create=False)
    ids = {"cash": 1, "shop": 1, "tshirt": 5}
    sessions = {"50 items": big_session(db, ids, 50, day="2026-12-01"), "5000 items": big_session(db, ids, 5000, per_tab=5, day="2026-12-02")}
    db.close()
    return path, sessions


def plain_rows(client: PahekoClient, session_id: int, page_size: int = 5000) -> int:
    """The alternative: one keyset-paged SELECT per list (tabs, items, payments, balances, methods, categories)."""
    tabs = f"SELECT id FROM {P}tabs WHERE session = {session_id}"
    lists = {
        "tabs": f"{P}tabs WHERE session = {session_id}",
        "tabs_items": f"{P}tabs_items WHERE tab IN ({tabs})",
        "tabs_payments": f"{P}tabs_payments WHERE tab IN ({tabs})",
        "sessions_balances": f"{P}sessions_balances WHERE id_session = {session_id}",
        "methods": f"{P}methods WHERE 1",
        "categories": f"{P}categories WHERE 1",
    }
    rows = len(client.sql(f"SELECT * FROM {P}sessions WHERE id = {session_id}").rows)
    for table, source in lists.items():
        after = 0
        while True:
            page = client.sql(
                f"SELECT {', '.join(LIST_COLUMNS[table])} FROM {source} AND id > {after} ORDER BY id LIMIT {page_size}"
            ).rows
            rows += len(page)
            if len(page) < page_size:
                break
            after = page[-1]["id"]
    return rows


def measure(app, action, runs: int) -> tuple[int, int, float]:
    """(requests, bytes) of one run and the median seconds over ``runs``."""
    app.stats.reset()
    action()
    requests, size = app.stats.requests, app.stats.bytes_sent
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return requests, size, statistics.median(times)


def add_closed(db: PahekoDB, count: int) -> None:
    with db.con:
        db.con.execute("BEGIN")
        for _ in range(count):
            db.con.execute("INSERT INTO plugin_pos_sessions (opened, closed, result, nb_tabs) VALUES "
                           "('2026-12-01 09:00:00', '2026-12-01 18:00:00', 0, 0)")


def poll_bench(directory: Path, history: int, runs: int) -> None:
    """A quiet poll's cost with one old open till, as the history of closed sessions grows."""
    from receiver.config import PahekoApi, Secret, Source
    from receiver.ledger import Ledger
    from receiver.reread.poller import poll_source

    print(f"\npoll with nothing new, one till left open since before the history (median of {runs}):")
    print(f"{'closed sessions':>16} {'requests':>9} {'bytes':>7} {'ms':>7}")
    path = directory / "poll.sqlite"
    db = PahekoDB(path)
    ids = reference_data(db)
    db.open_session("2026-11-01 09:00:00", cash={ids["cash"]: 0})  # the till nobody closed
    ledger = Ledger(f"sqlite:///{directory / 'poll-ledger.sqlite'}")
    ledger.migrate()
    done = 0
    with served(path) as (client, app):
        source = Source("lab", PARIS, (), PahekoApi(client.endpoint[: -len("/api/sql")], "x", Secret("x")))
        for size in sorted({history // 10, history // 2, history}):
            add_closed(db, size - done)
            done = size
            poll_source(source, client, ledger)  # records the new closed sessions
            requests, size_b, seconds = measure(app, lambda: poll_source(source, client, ledger), runs)
            print(f"{size:>16,} {requests:>9} {size_b:>7,} {seconds * 1000:>7.1f}")
    db.close()
    ledger.close()


def list_bench(directory: Path, rows: int = 302, document_kb: int = 180) -> None:
    """Peak memory of ``ledger list`` over entries that hold large re-read documents."""
    import tracemalloc

    from sqlalchemy import select

    from receiver.ledger import Entry, Ledger, State
    from receiver.ledger import tables as t

    ledger = Ledger(f"sqlite:///{directory / 'list-ledger.sqlite'}")
    ledger.migrate()
    document = {"tabs": [{"name": "x" * 1000, "n": n} for n in range(document_kb)]}
    for n in range(rows):
        entry = ledger.record_notification("lab", n + 1, {}, origin="module").entry
        ledger.transition(entry.id, State.MAPPED, snapshot=document, mapped=document)

    def peak(action) -> float:
        tracemalloc.start()
        action()
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top / 1e6

    def whole_rows():  # what a listing read before: every column, documents included
        with ledger.engine.connect() as conn:
            return [Entry.from_row(r) for r in conn.execute(select(t.entries).limit(rows))]

    print(f"\nledger list --limit {rows} over entries with two ~{document_kb} KB documents each: "
          f"peak {peak(lambda: ledger.list(limit=rows, documents=False)):.1f} MB (reading whole rows: {peak(whole_rows):.1f} MB)")
    ledger.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--history", type=int, default=5000, help="closed sessions for the poll bench")
    parser.add_argument("--only-poll", action="store_true", help="skip the re-read comparison")
    args = parser.parse_args()
    if args.only_poll:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        with tempfile.TemporaryDirectory() as tmp:
            poll_bench(Path(tmp), args.history, args.runs)
            list_bench(Path(tmp))
        return
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        path, sessions = build(Path(tmp))
        with served(path) as (client, app):
            auth = client._http.auth
            download_url = client.endpoint.replace("/api/sql", "/api/download")

            def download():
                with httpx.Client(auth=auth, timeout=30) as http:
                    response = http.get(download_url)
                    response.raise_for_status()
                    return response.content

            d_req, d_bytes, d_time = measure(app, download, args.runs)
            print(f"database file: {path.stat().st_size:,} bytes")
            print(f"{'':>12} {'requests':>9} {'bytes':>11} {'ms':>9}   {'bytes ratio':>12} {'time ratio':>11}")
            print(f"{'download':>12} {d_req:>9} {d_bytes:>11,} {d_time * 1000:>9.1f}")
            for label, session_id in sessions.items():
                snapshot = read_session(client, session_id, PARIS)
                assert snapshot.consistent and len(snapshot.items()) == int(label.split()[0])
                r, b, t = measure(app, lambda: read_session(client, session_id, PARIS), args.runs)
                print(f"{label:>12} {r:>9} {b:>11,} {t * 1000:>9.1f}   {d_bytes / b:>11.0f}x {d_time / t:>10.1f}x")
                r, b, t = measure(app, lambda: plain_rows(client, session_id), args.runs)
                print(f"{'  rows alt.':>12} {r:>9} {b:>11,} {t * 1000:>9.1f}   (fetch only, no validation)")
        poll_bench(Path(tmp), args.history, args.runs)
        list_bench(Path(tmp))


if __name__ == "__main__":
    main()
