#!/usr/bin/env python3
"""Acknowledgement latency and throughput of the notification endpoint, served as deployed, on loopback.

The server is the shipped one (``paheko-recyclic run``: waitress). Each notification is a new session
(a real ledger write, fsync'd) and is compared with ``/healthz`` on the same server, the trivial-route
baseline. Prints p50/p99 latency, throughput and the ratio. Target (issue 2): p99 under 20 ms and within
3x of the trivial route.

Then the same notifications while a pipeline worker (another process, ``paheko-recyclic worker``)
forwards a backlog at full speed through the local Paheko and Recyclic (a third process) into the
same SQLite ledger; it prints the worker's throughput during the run beside the latencies.
Target (issue 13 item 6): p99 under 20 ms with 4 clients. Two rows tell the machine's share from the
ledger's: ``/healthz`` beside the same worker (no ledger write at all), and notifications beside one
plain busy loop per core (no worker, nothing shared: what busy cores alone cost an fsync'd answer).

Each client is a process of its own, as each Paheko is.

Stalled connections (issue 13): ``--stalled N`` sockets (default 200) are held open in two variants —
a request head that never ends, and a body with valid credentials sent one byte at a time — while
notifications are measured; prints how many sockets were held, how many notifications were answered,
and their latency meanwhile (the former gunicorn set-up answered none once 8 sockets stalled).

    python bench/intake.py [--requests 2000] [--concurrency 4] [--backlog 1500] [--worker-threads 2] [--stalled 200]
"""

from __future__ import annotations

import argparse
import contextlib
import base64
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from receiver.dev import stalls
from receiver.dev.server import free_port
from receiver.dev.stalls import StalledClients

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
USER, PASSWORD = "intakebench", "BenchPassword123"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
BENCH_SOURCE = """
[sources.bench.webhook]
user = "{user}"
password = "{password}"
[sources.bench.paheko]
url = "{url}"
api_user = "{key[0]}"
api_password = "{key[1]}"
# Its notifications name sessions from 10,000,000 up; its poller must not queue the lab's history again.
first_session = 10000000
"""


def write_config(workdir: Path, lab_source: str = "", paheko: str = "http://127.0.0.1:9", key=("x", "x")) -> Path:
    """The bench source (its notifications name sessions Paheko does not have) and, optionally, a real one."""
    config = workdir / "config.toml"
    bench = BENCH_SOURCE.format(user=USER, password=PASSWORD, url=paheko, key=key)
    head = lab_source or f'[receiver]\nledger = "sqlite:///{workdir / "ledger.sqlite"}"\n'
    config.write_text(head + bench)
    return config


def start_server(workdir: Path) -> tuple[subprocess.Popen, str]:
    config = workdir / "config.toml"
    port = free_port()
    args = [sys.executable, "-m", "receiver", "--config", str(config), "run", "--bind", f"127.0.0.1:{port}"]
    env = {**os.environ, "PAHEKO_RECYCLIC_LOG_LEVEL": "warning"}
    process = subprocess.Popen(args, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(url + "/healthz", timeout=0.5).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    raise SystemExit("the receiver did not start: " + process.stderr.read().decode())


def measure(url: str, requests: int, concurrency: int, make_request) -> tuple[list[float], float]:
    """Latencies (ms) of ``requests`` calls spread over ``concurrency`` client processes, and wall time (s).

    Each client is its own process, as each Paheko is: threads of one Python process would wait for
    each other's interpreter lock (up to 5 ms a switch) and add that to every figure, server or not."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()
    pipes, clients = [], []
    for k in range(concurrency):
        receiving, sending = ctx.Pipe(duplex=False)
        share = range(k, requests, concurrency)
        clients.append(ctx.Process(target=_client, args=(url, share, make_request, go, sending), daemon=True))
        pipes.append(receiving)
        clients[-1].start()
    started = time.perf_counter()
    go.set()
    latencies = [ms for receiving in pipes for ms in receiving.recv()]
    wall = time.perf_counter() - started
    for client in clients:
        client.join()
        if client.exitcode:
            raise SystemExit(f"a client failed (exit code {client.exitcode})")
    return latencies, wall


def _client(url: str, share: range, make_request, go, sending) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        go.wait()
        latencies = []
        for n in share:
            started = time.perf_counter()
            response = make_request(client, n)
            latencies.append((time.perf_counter() - started) * 1000)
            assert response.status_code < 300, response.text
    sending.send(latencies)


class BackgroundWorker:
    """A ``paheko-recyclic worker`` process forwarding a backlog of ``backlog`` sessions of source ``lab``."""

    def __init__(self, workdir: Path, backlog: int, threads: int):
        from bench.pipeline import KEY, WEBHOOK, add_sessions, serve_stand_ins
        from receiver.demo import demo_config

        import multiprocessing
        import shutil

        db = workdir / "paheko.sqlite"
        shutil.copy(ROOT / "tests" / "fixtures" / "paheko-caisse.sqlite", db)
        self.sessions = add_sessions(db, tickets=3, count=backlog, day="2026-11-21")
        ctx = multiprocessing.get_context("spawn")
        urls = ctx.Queue()
        self.stand_ins = ctx.Process(target=serve_stand_ins, args=(str(db), urls), daemon=True)
        self.stand_ins.start()
        paheko_url, recyclic_url = urls.get(timeout=60)
        self.ledger_url = f"sqlite:///{workdir / 'ledger.sqlite'}"
        text = demo_config(paheko_url, KEY, recyclic_url, WEBHOOK, ledger=self.ledger_url, close_session=False)
        # The worker also re-reads the bench's notifications: unknown sessions, held at the first read.
        self.config = write_config(workdir, text, paheko=paheko_url, key=KEY)
        self.threads = threads
        self.process: subprocess.Popen | None = None
        self.ledger = None

    def queue_backlog(self) -> None:
        from receiver.ledger import Ledger

        self.ledger = Ledger(self.ledger_url)
        self.ledger.migrate()
        for session in self.sessions:
            self.ledger.record_notification("lab", session, {}, origin="backfill")

    def forwarded(self) -> int:
        return self.ledger.counts().get(("lab", "forwarded"), 0)

    def start(self) -> None:
        env = {**os.environ, "PAHEKO_RECYCLIC_LOG_LEVEL": "warning"}
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from receiver.cli import main; main()", "--config", str(self.config), "worker",
             "--threads", str(self.threads)], env=env, cwd=ROOT, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        if self.ledger is not None:
            self.ledger.close()
        self.stand_ins.kill()
def stalled_connections(url: str, count: int, requests: int, make_request) -> list[tuple]:
    """Per variant: sockets held (still open, unanswered) and notifications answered meanwhile.

    Bounded: ``requests`` sequential notifications with a 5 s client timeout each; in the body variant
    every socket gets one more byte every 0.2 s (never idle, never complete).
    """
    host, port = url.removeprefix("http://").split(":")
    variants = {"head never ends": (stalls.head(), False),
                "body 1 byte at a time": (stalls.trickling_body("/api/paheko/caisse/v1/session-closed", BASIC), True)}
    rows = []
    for name, (first_bytes, trickle) in variants.items():
        with StalledClients(host, int(port), first_bytes, count, trickle=trickle) as stalled:
            latencies, failures = [], 0
            with httpx.Client(base_url=url, timeout=5) as client:
                for n in range(requests):
                    started = time.perf_counter()
                    try:
                        ok = make_request(client, n).status_code < 300
                    except httpx.HTTPError:
                        ok = False
                    if ok:
                        latencies.append((time.perf_counter() - started) * 1000)
                    else:
                        failures += 1
            rows.append((name, stalled.held(), len(latencies), failures, latencies))
    return rows


@contextlib.contextmanager
def busy_cores(count: int):
    """``count`` processes spinning on the CPU (at the clients' and the receiver's priority) meanwhile."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=1000)[int(p * 10) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--backlog", type=int, default=1500, help="sessions the concurrent worker forwards")
    parser.add_argument("--worker-threads", type=int, default=2, help="threads of the concurrent worker")
    parser.add_argument("--quiet-only", action="store_true", help="skip the run beside a forwarding worker")
    parser.add_argument("--stalled", type=int, default=200, help="stalled sockets per variant (0: skip)")
    parser.add_argument("--stalled-requests", type=int, default=500, help="notifications sent while they stall")
    args = parser.parse_args()
    auth = {"Authorization": BASIC,
            "Content-Type": "application/json"}
    offset = [10_000_000]  # session ids Paheko does not have: the worker holds them after one read

    def notify(client: httpx.Client, n: int) -> httpx.Response:
        body = {"event": "session.closed", "session_id": offset[0] + n + 1, "closed": "2026-11-24 18:00:00",
                "result": 12450, "nb_tabs": 5, "payments": [{"method_id": 1, "total": 1950}]}
        return client.post("/api/paheko/caisse/v1/session-closed", content=json.dumps(body), headers=auth)

    def health(client: httpx.Client, n: int) -> httpx.Response:
        return client.get("/healthz")

    with tempfile.TemporaryDirectory() as tmp:
        worker = None if args.quiet_only else BackgroundWorker(Path(tmp), args.backlog, args.worker_threads)
        if worker is None:
            write_config(Path(tmp))
        process, url = start_server(Path(tmp))
        try:
            measure(url, 200, args.concurrency, health)  # warm-up
            measure(url, 200, args.concurrency, notify)
            offset[0] += 200
            print(f"paheko-recyclic run (waitress) on loopback, {args.requests} requests per route, {args.concurrency} client processes, "
                  f"{os.cpu_count()} cores")
            rows = []
            for name, fn in (("trivial /healthz", health), ("notification (new session, committed)", notify)):
                for mode, concurrency in (("sequential", 1), ("concurrent", args.concurrency)):
                    lat, wall = measure(url, args.requests, concurrency, fn)
                    rows.append((name, mode, pct(lat, 50), pct(lat, 99), args.requests / wall))
                    if fn is notify:
                        offset[0] += args.requests
            for name, mode, p50, p99, rps in rows:
                print(f"  {name:<40} {mode:<11} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  {rps:7.0f} req/s")
            for mode_index, mode in ((0, "sequential"), (1, "concurrent")):
                base, notif = rows[mode_index], rows[2 + mode_index]
                verdict = "OK" if notif[3] < 20 and notif[3] <= 3 * max(base[3], 1.0) else "MISSED"
                print(f"  {mode}: p99 ratio notification/trivial = {notif[3] / base[3]:.2f}x "
                      f"(p99 {notif[3]:.2f} ms; target < 20 ms and <= 3x, floor 1 ms) -> {verdict}")
            if worker is not None:
                with busy_cores(os.cpu_count() or 1):
                    lat, _ = measure(url, args.requests, args.concurrency, notify)
                offset[0] += args.requests
                print(f"  notification concurrent beside {os.cpu_count()} busy loop(s), no worker: "
                      f"p50 {pct(lat, 50):6.2f} ms  p99 {pct(lat, 99):6.2f} ms (busy cores alone)")
            if worker is not None:
                worker.queue_backlog()
                worker.start()
                while worker.forwarded() < 20:  # wait until it forwards at full speed
                    time.sleep(0.2)
                print(f"beside a pipeline worker ({args.worker_threads} thread(s), another process) forwarding "
                      f"a backlog of {args.backlog} sessions into the same SQLite ledger:")
                lat, _ = measure(url, args.requests, args.concurrency, health)
                print(f"  trivial /healthz concurrent  p50 {pct(lat, 50):6.2f} ms  p99 {pct(lat, 99):6.2f} ms  "
                      "(no ledger write: the machine's share)")
                for mode, concurrency in (("sequential", 1), ("concurrent", args.concurrency)):
                    before, started = worker.forwarded(), time.perf_counter()
                    lat, wall = measure(url, args.requests, concurrency, notify)
                    offset[0] += args.requests
                    rate = (worker.forwarded() - before) / (time.perf_counter() - started)
                    verdict = "OK" if pct(lat, 99) < 20 else "MISSED"
                    print(f"  notification {mode:<11} p50 {pct(lat, 50):6.2f} ms  p99 {pct(lat, 99):6.2f} ms  "
                          f"{args.requests / wall:7.0f} req/s   worker meanwhile: {rate:5.1f} sessions/s "
                          f"(target p99 < 20 ms) -> {verdict}")
                if worker.forwarded() >= len(worker.sessions):
                    print("  (the backlog ran out during the run: raise --backlog)")
            if args.stalled:
                print(f"stalled connections: {args.stalled} sockets per variant, {args.stalled_requests} sequential "
                      "notifications meanwhile (5 s client timeout)")
                for name, held, answered, failed, lat in stalled_connections(url, args.stalled, args.stalled_requests, notify):
                    figures = f"p50 {pct(lat, 50):6.2f} ms  p99 {pct(lat, 99):6.2f} ms" if lat else "no answer"
                    print(f"  {name:<24} held {held}/{args.stalled}  answered {answered}/{answered + failed}  {figures}")
                    offset[0] += args.stalled_requests
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
            if worker is not None:
                worker.stop()


if __name__ == "__main__":
    main()
