#!/usr/bin/env python3
"""The month report on a year of a busy shop: ~300 sessions, ~18,000 tickets, read from a real SQLite ledger.

Setup (generating, mapping with the real mapper, writing the ledger) is not timed. Timed: reading the ledger
entries of the period, reconciling, and rendering text, CSV and HTML — what ``paheko-recyclic report`` does.

    python bench/report.py [--sessions 300] [--tickets 60] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from receiver.ledger import Ledger  # noqa: E402
from receiver.report.html import render_html  # noqa: E402
from receiver.report.ledger import load_sessions  # noqa: E402
from receiver.report.reconcile import reconcile  # noqa: E402
from receiver.report.render import render_csv, render_text  # noqa: E402
from tests.report_support import fill_ledger, year_days  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--tickets", type=int, default=60, help="tickets per session")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(f"sqlite:///{Path(tmp) / 'ledger.sqlite'}")
        ledger.migrate()
        started = time.perf_counter()
        days = year_days(2025, args.sessions)
        fill_ledger(ledger, days, args.tickets, unfinished={5: "mapped", 9: "held", 12: "notified"})
        size = (Path(tmp) / "ledger.sqlite").stat().st_size
        print(f"setup: {args.sessions} sessions, {args.sessions * args.tickets} tickets, ledger "
              f"{size / 1e6:.1f} MB, {time.perf_counter() - started:.1f} s (not timed)")
        for label, since, until in (("year 2025", date(2025, 1, 1), date(2025, 12, 31)),
                                    ("month 2025-09", date(2025, 9, 1), date(2025, 9, 30))):
            best = None
            for _ in range(args.runs):
                cpu = time.process_time()
                t0 = time.perf_counter()
                sessions = load_sessions(ledger, "shop", since, until)
                t1 = time.perf_counter()
                report = reconcile("shop", sessions, since, until)
                t2 = time.perf_counter()
                text, csv, html = render_text(report), render_csv(report), render_html(report)
                t3 = time.perf_counter()
                run = (t3 - t0, t1 - t0, t2 - t1, t3 - t2, time.process_time() - cpu)
                best = run if best is None or run[0] < best[0] else best
            items = report.total.paheko.items
            print(f"{label}: {len(sessions)} sessions, {items} articles, {report.total.paheko.grams / 1000:.0f} kg, "
                  f"{report.total.paheko.cents / 100:.2f} EUR — best of {args.runs}: {best[0]:.3f} s wall, "
                  f"{best[4]:.3f} s CPU "
                  f"(ledger read {best[1]:.3f} s, reconcile {best[2]:.3f} s, render {best[3]:.3f} s; "
                  f"text {len(text) // 1000} kB, CSV {len(csv) // 1000} kB, HTML {len(html) // 1000} kB)")
            print(f"  verdict: {report.verdict}")
        print(f"load average now: {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} cores "
              "(wall time grows with other work on the machine; CPU time much less)")
        ledger.close()


if __name__ == "__main__":
    main()
