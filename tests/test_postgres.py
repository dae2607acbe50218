"""The ledger on PostgreSQL: migrations, idempotent intake and exclusive claims across processes.

A throwaway server is started from Debian's binaries (``/usr/lib/postgresql/*/bin``, package
``postgresql``) on a Unix socket in a temporary directory; as root it runs as the ``postgres`` user.
Without binaries (or a user to run them) these tests are skipped, not failed.
"""

from __future__ import annotations

import glob
import multiprocessing
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from datetime import UTC, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (pip install '.[postgres]')")

from receiver.ledger import Ledger, State  # noqa: E402
from receiver.ledger import tables as t  # noqa: E402
from receiver.ledger.maintenance import prune_raw_bodies  # noqa: E402
from receiver.ledger.store import utcnow  # noqa: E402

PROCESSES = 4


def _server_binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="session")
def postgres_server():
    """``(socket directory, superuser)`` of a private PostgreSQL server for this test session."""
    binaries = _server_binaries()
    if binaries is None:
        pytest.skip("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin (apt-get install postgresql)")
    run_as: list[str] = []
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no 'postgres' user to run the PostgreSQL server")
        run_as = ["runuser", "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="paheko-recyclic-pg-"))
    if run_as:
        shutil.chown(base, "postgres")
    data, log = base / "data", base / "server.log"
    superuser = "postgres"

    def run(*args: str) -> None:
        result = subprocess.run([*run_as, *args], capture_output=True, text=True, timeout=60)
        if result.returncode:
            log_text = log.read_text() if log.exists() else ""
            shutil.rmtree(base, ignore_errors=True)
            pytest.skip(f"cannot start PostgreSQL ({args[0]}): {result.stderr.strip()} {log_text[-500:]}")

    run(str(binaries / "initdb"), "-D", str(data), "-U", superuser, "-A", "trust", "-E", "UTF8", "--no-sync",
        "--no-instructions")
    options = f"-k {base} -c listen_addresses='' -c fsync=off -c max_connections=60"
    run(str(binaries / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "30", "start")
    try:
        yield str(base), superuser
    finally:
        subprocess.run([*run_as, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_url(postgres_server):
    """A fresh, empty database for one test; its SQLAlchemy URL."""
    socket_dir, user = postgres_server
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(host=socket_dir, user=user, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://{user}@/{name}?host={socket_dir}"


def _in_processes(target, *args) -> list:
    """Run ``target(barrier, queue, *args)`` in PROCESSES processes at once; their results."""
    context = multiprocessing.get_context("spawn")
    barrier, queue = context.Barrier(PROCESSES), context.Queue()
    processes = [context.Process(target=target, args=(barrier, queue, *args)) for _ in range(PROCESSES)]
    for process in processes:
        process.start()
    results = [queue.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    errors = [r for r in results if isinstance(r, str)]
    assert not errors, errors
    return results


def _migrate(barrier, queue, url):
    ledger = Ledger(url)
    barrier.wait()
    try:
        queue.put(ledger.migrate())
    except Exception as exc:  # reported to the test, which fails on it
        queue.put(f"{type(exc).__name__}: {exc}")
    finally:
        ledger.close()


def _notify(barrier, queue, url):
    ledger = Ledger(url)
    barrier.wait()
    try:
        outcomes = [ledger.record_notification("lab", 42, {"result": 7290}, origin="module").outcome
                    for _ in range(5)]
        queue.put(outcomes)
    except Exception as exc:
        queue.put(f"{type(exc).__name__}: {exc}")
    finally:
        ledger.close()


def _claim_all(barrier, queue, url):
    ledger = Ledger(url)
    name = f"worker-{os.getpid()}"
    barrier.wait()
    try:
        claimed = []
        while (entry := ledger.claim(name, lease=timedelta(minutes=10))) is not None:
            claimed.append(entry.id)
        queue.put(claimed)
    except Exception as exc:
        queue.put(f"{type(exc).__name__}: {exc}")
    finally:
        ledger.close()


def test_migrations_from_several_processes_at_once(pg_url):
    results = _in_processes(_migrate, pg_url)
    assert sorted(before for before, _ in results) == [0] + [t.SCHEMA_VERSION] * (PROCESSES - 1)
    assert {after for _, after in results} == {t.SCHEMA_VERSION}
    ledger = Ledger(pg_url)
    try:
        assert ledger.migrate() == (t.SCHEMA_VERSION, t.SCHEMA_VERSION)
        ledger.check_writable()
    finally:
        ledger.close()


def test_concurrent_duplicate_notifications_make_one_entry(pg_url):
    Ledger(pg_url).migrate()
    results = _in_processes(_notify, pg_url)
    outcomes = [o for r in results for o in r]
    assert outcomes.count("new") == 1 and outcomes.count("duplicate") == len(outcomes) - 1
    ledger = Ledger(pg_url)
    try:
        [entry] = ledger.list(source="lab")
        assert entry.session_id == 42 and entry.state == State.NOTIFIED
        assert entry.created_at.tzinfo == UTC
        assert len(ledger.notifications_of(entry.id)) == len(outcomes)
        assert [h["to_state"] for h in ledger.history(entry.id)] == ["notified"]
    finally:
        ledger.close()


def test_claims_are_exclusive_across_processes(pg_url):
    ledger = Ledger(pg_url)
    try:
        ledger.migrate()
        ids = {ledger.record_notification("lab", n, {}, origin="poller").entry.id for n in range(1, 41)}
    finally:
        ledger.close()
    results = _in_processes(_claim_all, pg_url)
    claimed = [entry_id for r in results for entry_id in r]
    assert sorted(claimed) == sorted(ids)  # every entry claimed, none twice


def test_changed_figures_and_transitions_round_trip(pg_url):
    ledger = Ledger(pg_url)
    try:
        ledger.migrate()
        entry = ledger.record_notification("lab", 7, {"result": 100}, origin="module").entry
        assert ledger.record_notification("lab", 7, {"result": 150}, origin="module").outcome == "changed"
        claimed = ledger.claim("w1")
        assert claimed is not None and claimed.id == entry.id and ledger.claim("w2") is None
        moved = ledger.transition(entry.id, State.SNAPSHOT, expect=[State.NOTIFIED], snapshot={"id": 7})
        assert moved.snapshot == {"id": 7} and moved.updated_at >= moved.created_at
        overview = ledger.overview()["lab"]
        assert overview["states"] == {"snapshot": 1} and overview["oldest_pending"].tzinfo == UTC
        assert prune_raw_bodies(ledger, 1, now=utcnow() + timedelta(days=2)) == 0  # no raw bodies here
        ledger.record_notification("lab", 8, {}, origin="module", raw_body="{}")
        assert prune_raw_bodies(ledger, 1, now=utcnow() + timedelta(days=2)) == 1
    finally:
        ledger.close()


def test_ledger_url_without_host_uses_libpq_environment(postgres_server, pg_url, monkeypatch):
    """The documented form: ``postgresql+psycopg:///NAME`` with PGHOST/PGUSER from the environment."""
    socket_dir, user = postgres_server
    monkeypatch.setenv("PGHOST", socket_dir)
    monkeypatch.setenv("PGUSER", user)
    ledger = Ledger(f"postgresql+psycopg:///{make_url(pg_url).database}")
    try:
        assert ledger.migrate()[1] == t.SCHEMA_VERSION
        ledger.ping()
    finally:
        ledger.close()


def _notify_once(barrier, queue, url):
    ledger = Ledger(url)
    barrier.wait()
    try:
        ledger.record_notification("lab", 900 + os.getpid() % 1000, {}, origin="module")
        queue.put(["ok"])
    except Exception as exc:
        queue.put(f"{type(exc).__name__}: {exc}")
    finally:
        ledger.close()


def test_listen_notify_wakes_an_idle_worker_of_another_process(pg_url):
    from tests.wakeup_support import listening

    with listening(pg_url, "lab", "other") as (_, (lab, other)):
        assert lab.wait(10)  # the listener rings once when LISTEN is in place
        lab.clear(), other.clear()
        _in_processes(_notify_once, pg_url)
        assert lab.wait(10), "no NOTIFY reached the listening worker"
        assert not other.is_set()  # the payload names the source


def test_a_rolled_back_notification_wakes_nobody(pg_url):
    from tests.wakeup_support import listening

    with listening(pg_url, "lab") as (ledger, (lab,)):
        assert lab.wait(10)
        lab.clear()
        try:
            with ledger.transaction() as conn:
                ledger.wakeup.in_transaction(conn, "lab")
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass
        assert not lab.wait(1.0)  # NOTIFY is delivered on commit only


def test_month_report_reads_the_same_from_postgresql(pg_url, tmp_path):
    """The report's ledger reading (documents, forward records) gives the same report on PostgreSQL."""
    from datetime import date

    from receiver.report.ledger import load_sessions
    from receiver.report.reconcile import reconcile
    from receiver.report.render import render_csv
    from tests.report_support import fill_ledger

    days = [date(2025, 9, d) for d in (1, 2, 3, 4)]
    reports = []
    for url in (pg_url, f"sqlite:///{tmp_path / 'l.sqlite'}"):
        ledger = Ledger(url)
        ledger.migrate()
        try:
            fill_ledger(ledger, days, 6, unfinished={2: "mapped", 3: "held"})
            sessions = load_sessions(ledger, "shop", date(2025, 9, 1), date(2025, 9, 30))
        finally:
            ledger.close()
        reports.append(reconcile("shop", sessions, date(2025, 9, 1), date(2025, 9, 30)))
    assert reports[0].total.pending.cents > 0 and reports[0].total.held.cents > 0
    assert render_csv(reports[0]) == render_csv(reports[1]) and reports[0].verdict == reports[1].verdict
