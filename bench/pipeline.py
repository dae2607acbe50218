#!/usr/bin/env python3
"""Time from a module notification to the last sale acknowledged by Recyclic, and worker throughput.

The local Paheko and the local Recyclic run in a separate process (their CPU is not ours); the
receiver and the worker run here. HTTP time spent in Paheko's and Recyclic's clients is measured
at the transport, so the report splits each run into waiting on Paheko, waiting on Recyclic, and
our own code (ledger, validation, mapping).

    python bench/pipeline.py [--sessions 1000] [--threads 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from receiver.app import create_app  # noqa: E402
from receiver.commands.replay import CapturedRequest, send  # noqa: E402
from receiver.config import load_config  # noqa: E402
from receiver.demo import demo_config, module_payload  # noqa: E402
from receiver.dev.server import LocalServer  # noqa: E402
from receiver.sinks.recyclic.sink import RecyclicSink  # noqa: E402
from receiver.sinks.recyclic.client import RecyclicClient  # noqa: E402
from receiver.ledger import State  # noqa: E402
from receiver.reread.client import PahekoClient  # noqa: E402
from receiver.runner import Runner  # noqa: E402
from receiver.services import EXTENSION  # noqa: E402
from receiver.worker import Worker  # noqa: E402
from tests.paheko_db import PahekoDB  # noqa: E402

WEBHOOK = ("benchmodule", "BenchPassword42")
KEY = ("benchkey", "BenchSecret42")


def serve_stand_ins(db: str, queue) -> None:
    """Child process: the local Paheko and the local Recyclic, until killed."""
    from receiver.dev.paheko import create_paheko_app
    from receiver.dev.recyclic import create_recyclic_app

    paheko = LocalServer(create_paheko_app(db, {KEY[0]: (KEY[1], "read")})).start()
    recyclic = LocalServer(create_recyclic_app("v2")).start()
    queue.put((paheko.url, recyclic.url))
    threading.Event().wait()


class TimedTransport(httpx.HTTPTransport):
    """Adds up the seconds spent in HTTP exchanges (request sent to body read); notes when the first began."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds = 0.0
        self.first_at: float | None = None
        self.lock = threading.Lock()

    def reset(self) -> None:
        self.seconds, self.first_at = 0.0, None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        started = time.perf_counter()
        with self.lock:
            self.first_at = self.first_at or started
        response = super().handle_request(request)
        response.read()
        with self.lock:
            self.seconds += time.perf_counter() - started
        return response


def add_sessions(db: Path, *, tickets: int, count: int, day: str) -> list[int]:
    """``count`` closed sessions of ``tickets`` tickets (a T-shirt and a book each, paid cash and card)."""
    pdb = PahekoDB(db, create=False)
    created = []
    with pdb.con:
        pdb.con.execute("BEGIN")
        for _ in range(count):
            session = pdb.open_session(f"{day} 09:00:00", location=1, cash={1: 5000, 5: 0})
            for n in range(tickets):
                tab = pdb.tab(session, f"{day} 10:00:00", name=f"Client {n}")
                pdb.item(tab, f"{day} 10:00:00", "T-shirt", "Vêtements", price=300, weight=200, product=5)
                pdb.item(tab, f"{day} 10:00:00", "Livre de poche", "Livres", price=100, qty=2, weight=150, product=9)
                pdb.payment(tab, 1, 300, f"{day} 10:00:00")
                pdb.payment(tab, 4, 200, f"{day} 10:00:00", reference="TPE")
            created.append(session)
    for session in created:
        pdb.close_session(session, f"{day} 18:00:00", {1: 5000 + 300 * tickets, 5: 0})
    pdb.close()
    return created


def idle_worker_runs(config, ledger, receiver_url, db, worker_kwargs, paheko_t, recyclic_t, split, runs=5) -> None:
    """The module notifies while the worker (as ``paheko-recyclic worker`` runs it) sits idle: its wake-up
    is part of the time. Median over ``runs`` sessions of 3 tickets, each a fresh session."""
    done = threading.Event()
    target: list[int] = []

    def on_step(entry, step) -> None:
        if entry.session_id in target and entry.state in (State.FORWARDED, State.HELD, State.DEAD):
            done.set()

    runner = Runner(config, ledger, poll=False,
                    make_worker=lambda **kw: Worker(config, ledger, on_step=on_step, **worker_kwargs, **kw)).start()
    sessions = add_sessions(db, tickets=3, count=runs, day="2026-11-22")
    rows = []
    try:
        for session in sessions:
            time.sleep(0.5)  # the worker has nothing to do and waits
            paheko_t.reset(), recyclic_t.reset()
            done.clear()
            target[:] = [session]
            request = CapturedRequest.from_payload(module_payload(db, session))  # what the module would send
            started = time.perf_counter()
            send(request, receiver_url, WEBHOOK)
            acknowledged = time.perf_counter()
            done.wait(30)
            wall = time.perf_counter() - started
            assert ledger.get("lab", session).state == State.FORWARDED, ledger.get("lab", session).reason
            wake = (paheko_t.first_at or acknowledged) - acknowledged
            rows.append((wall, wake, paheko_t.seconds, recyclic_t.seconds))
    finally:
        runner.stop()
    rows.sort()
    wall, wake, paheko_s, recyclic_s = rows[len(rows) // 2]
    paheko_t.seconds, recyclic_t.seconds = paheko_s, recyclic_s
    print(f"  {'idle worker, 3 tickets':<26} notification → last sale acknowledged: {wall * 1000:8.1f} ms   "
          f"({split(wall)}; median of {runs})")
    print(f"    wake-up: module answered → worker's first Paheko request {wake * 1000:.1f} ms "
          f"(max of {runs}: {max(r[1] for r in rows) * 1000:.1f} ms; target < 50 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=1000, help="queued sessions for the throughput run")
    parser.add_argument("--threads", type=int, default=2, help="worker threads for the throughput run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        db = work / "paheko.sqlite"
        shutil.copy(ROOT / "tests" / "fixtures" / "paheko-caisse.sqlite", db)
        [big] = add_sessions(db, tickets=300, count=1, day="2026-11-20")
        queued = add_sessions(db, tickets=3, count=args.sessions, day="2026-11-21")
        ctx = multiprocessing.get_context("spawn")
        urls = ctx.Queue()
        stand_ins = ctx.Process(target=serve_stand_ins, args=(str(db), urls), daemon=True)
        stand_ins.start()
        paheko_url, recyclic_url = urls.get(timeout=60)
        config_path = work / "config.toml"
        config_path.write_text(demo_config(paheko_url, KEY, recyclic_url, WEBHOOK, close_session=False))
        config = load_config(config_path)
        app = create_app(config)
        import logging

        logging.getLogger("receiver").setLevel(logging.WARNING)
        ledger = app.extensions[EXTENSION].ledger
        paheko_t, recyclic_t = TimedTransport(), TimedTransport()

        worker_kwargs = dict(
            client_factory=lambda s: PahekoClient(s.name, s.paheko, transport=paheko_t),
            sink_factory=lambda s: RecyclicSink(s.sink, client=RecyclicClient(s.sink, transport=recyclic_t)))

        def worker() -> Worker:
            return Worker(config, ledger, **worker_kwargs)

        def split(wall: float) -> str:
            ours = max(0.0, wall - paheko_t.seconds - recyclic_t.seconds)
            return (f"Recyclic {recyclic_t.seconds / wall:5.1%}, Paheko {paheko_t.seconds / wall:5.1%}, "
                    f"our code {ours / wall:5.1%}")

        print(f"{Path(sys.executable).name}, stand-ins in a separate process, {multiprocessing.cpu_count()} cores")
        with LocalServer(app) as receiver:
            for label, sessions in (("fixture sessions 1 and 2", [1, 2]), ("one 300-ticket session", [big])):
                paheko_t.seconds = recyclic_t.seconds = 0.0
                w = worker()
                started = time.perf_counter()
                for session in sessions:
                    send(CapturedRequest.from_payload(module_payload(db, session)), receiver.url, WEBHOOK)
                w.run_once()
                wall = time.perf_counter() - started
                w.close()
                states = {e.state for e in ledger.get_many("lab", sessions).values()}
                assert states == {State.FORWARDED}, [e.reason for e in ledger.get_many("lab", sessions).values()]
                print(f"  {label:<26} notification → last sale acknowledged: {wall * 1000:8.1f} ms   ({split(wall)})")

            idle_worker_runs(config, ledger, receiver.url, db, worker_kwargs, paheko_t, recyclic_t, split)

            for session in queued:
                ledger.record_notification("lab", session, {}, origin="backfill")
            paheko_t.seconds = recyclic_t.seconds = 0.0
            workers = [worker() for _ in range(args.threads)]
            started = time.perf_counter()
            threads = [threading.Thread(target=w.run_once) for w in workers]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - started
            for w in workers:
                w.close()
            done = sum(1 for e in ledger.get_many("lab", queued).values() if e.state == State.FORWARDED)
            print(f"  throughput: {done}/{len(queued)} queued sessions (3 tickets each) forwarded in {wall:6.1f} s "
                  f"= {done / wall:6.1f} sessions/s with {args.threads} worker thread(s)")
            # Transport time adds up across threads; report it per thread to compare with wall time.
            paheko_t.seconds /= args.threads
            recyclic_t.seconds /= args.threads
            print(f"    per worker thread: {split(wall)}")
        stand_ins.kill()


if __name__ == "__main__":
    main()
