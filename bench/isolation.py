#!/usr/bin/env python3
"""One organisation's hung or failing Paheko must not slow the others (issue 13 item 4).

Ten sources, each with its own local Paheko (all stand-ins in one separate process) holding
``--sessions`` closed sessions to forward; the worker (``Runner``, as ``paheko-recyclic worker``
runs it, ``--threads`` per source) forwards them to each source's JSON-lines file. Two runs:

1. every Paheko healthy;
2. one Paheko hung (answers after ``--hang`` s, above the 30 s read timeout), one answering 503.

Prints forwarded sessions per source over time, then the time the healthy sources took in each run
(target: within 20 % of each other).

    python bench/isolation.py [--sessions 30] [--threads 1] [--hang 35] [--every 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import multiprocessing
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pipeline import add_sessions  # noqa: E402
from receiver.config import load_config  # noqa: E402
from receiver.ledger import Ledger, State  # noqa: E402
from receiver.runner import Runner  # noqa: E402
from tests.multi_source import PAHEKO_KEY, multi_source_config  # noqa: E402

SOURCES = [f"org{n}" for n in range(10)]
HUNG, FAILING = "org3", "org7"


def serve_paheko(db: str, faults: dict[str, tuple], queue) -> None:
    """Child process: one local Paheko per source (same database, faults of their own), until killed."""
    from receiver.dev.paheko import create_paheko_app
    from receiver.dev.server import LocalServer

    urls = {}
    for name in SOURCES:
        app = create_paheko_app(db, {PAHEKO_KEY[0]: (PAHEKO_KEY[1], "read")})
        if name in faults:
            kind, times, value = faults[name]
            app.faults.add(kind, times=times, **value)
        urls[name] = LocalServer(app).start().url
    queue.put(urls)
    threading.Event().wait()


def run(work: Path, db: Path, sessions: list[int], faults: dict, threads: int, every: float, limit: float) -> dict:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    stand_ins = ctx.Process(target=serve_paheko, args=(str(db), faults, queue), daemon=True)
    stand_ins.start()
    urls = queue.get(timeout=60)
    run_dir = Path(tempfile.mkdtemp(dir=work))
    path = run_dir / "config.toml"
    path.write_text(multi_source_config(f"sqlite:///{run_dir / 'ledger.sqlite'}", urls))
    config = load_config(path)
    ledger = Ledger(config.receiver.ledger_url)
    ledger.migrate()
    for name in SOURCES:
        for session in sessions:
            ledger.record_notification(name, session, {}, origin="module")
    healthy = [s for s in SOURCES if s not in faults]
    done_at: dict[str, float] = {}
    print("    t(s)  " + " ".join(f"{name:>6}" for name in SOURCES))
    runner = Runner(config, ledger, threads=threads, poll=False)
    started = time.perf_counter()
    runner.start()
    next_print = 0.0
    while True:
        elapsed = time.perf_counter() - started
        by_state = ledger.counts()
        counts = {name: by_state.get((name, State.FORWARDED.value), 0) for name in SOURCES}
        for name in SOURCES:
            if counts[name] == len(sessions) and name not in done_at:
                done_at[name] = elapsed
        finished = all(name in done_at for name in healthy)
        if elapsed >= next_print or finished:
            print(f"  {elapsed:6.1f}  " + " ".join(f"{counts[name]:>6}" for name in SOURCES))
            next_print += every
        if finished or elapsed > limit:
            break
        time.sleep(0.1)
    by_state = ledger.counts()
    stuck = {name: {state: n for (source, state), n in by_state.items() if source == name} for name in faults}
    runner.stop(grace=1)
    ledger.close()
    stand_ins.kill()
    return {"healthy_done": max(done_at.get(n, float("inf")) for n in healthy), "done_at": done_at, "stuck": stuck,
            "forwarded": sum(1 for n in healthy if n in done_at) * len(sessions)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=30, help="sessions per source")
    parser.add_argument("--threads", type=int, default=1, help="worker threads per source")
    parser.add_argument("--hang", type=float, default=35.0, help="seconds the hung Paheko takes to answer")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between progress lines")
    parser.add_argument("--limit", type=float, default=420.0, help="give up after this many seconds")
    args = parser.parse_args()
    logging.getLogger("receiver").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        work = Path(tmp)
        db = work / "paheko.sqlite"
        shutil.copy(ROOT / "tests" / "fixtures" / "paheko-caisse.sqlite", db)
        sessions = add_sessions(db, tickets=3, count=args.sessions, day="2026-11-21")
        print(f"{len(SOURCES)} sources x {args.sessions} sessions (3 tickets each), {args.threads} worker thread(s) "
              f"per source, local Paheko stand-ins in a separate process, file sinks")
        print("\n1. every Paheko healthy — forwarded sessions per source:")
        healthy = run(work, db, sessions, {}, args.threads, args.every, args.limit)
        faults = {HUNG: ("delay", 100_000, {"seconds": args.hang}),
                  FAILING: ("server_error", 1_000_000, {"status": 503})}
        print(f"\n2. {HUNG} hung ({args.hang:.0f} s per answer), {FAILING} answering 503 — forwarded per source:")
        faulty = run(work, db, sessions, faults, args.threads, args.every, args.limit)
        print("\n3. every Paheko healthy again (how much the machine's load moves the figures):")
        again = run(work, db, sessions, {}, args.threads, args.every, args.limit)
        n_healthy = len(SOURCES) - len(faults)
        refs = [max(t for name, t in r["done_at"].items() if name not in faults) for r in (healthy, again)]
        ref = sum(refs) / 2
        print(f"\nthe {n_healthy} healthy sources' {n_healthy * args.sessions} sessions: "
              f"{refs[0]:.1f} s and {refs[1]:.1f} s when every Paheko is healthy, {faulty['healthy_done']:.1f} s beside "
              f"the hung and failing ones ({faulty['forwarded']} forwarded) -> {faulty['healthy_done'] / ref - 1:+.0%} "
              f"(target within 20 %) -> {'OK' if faulty['healthy_done'] <= 1.2 * ref else 'MISSED'}")
        print(f"  faulty sources when the healthy ones were done: {faulty['stuck']}")
        sys.stdout.flush()
        os._exit(0)  # the hung source's thread is still waiting on its answer: nothing to wait for


if __name__ == "__main__":
    main()
