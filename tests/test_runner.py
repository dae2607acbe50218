"""The long-running worker: per-source isolation, breaker, deadlines, leases, wake-ups and stops.

Assertions are on progress and outcomes (what is forwarded, what is claimed, whether a process
ended); the few time bounds are many times the expected value and far below what the old
behaviour took (a 10-minute lease, a 156 s step, a one-second idle loop).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from receiver.config import load_config
from receiver.dev.paheko import create_paheko_app
from receiver.dev.server import LocalServer
from receiver.ledger import Ledger, State
from receiver.ledger import wakeup as wakeup_module
from receiver.ledger.wakeup import Doorbell
from receiver.reread.client import PahekoClient, PahekoUnavailable
from receiver.runner import Breaker, Runner
from receiver.worker import Worker
from tests.conftest import FIXTURES
from tests.multi_source import PAHEKO_KEY, multi_source_config
from tests.wakeup_support import listening

ROOT = Path(__file__).resolve().parent.parent


def paheko(tmp_path: Path, name: str = "paheko") -> LocalServer:
    db = tmp_path / f"{name}.sqlite"
    shutil.copy(FIXTURES / "paheko-caisse.sqlite", db)
    return LocalServer(create_paheko_app(str(db), {PAHEKO_KEY[0]: (PAHEKO_KEY[1], "read")})).start()


def write_config(tmp_path: Path, urls: dict[str, str], **settings) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(multi_source_config(f"sqlite:///{tmp_path / 'ledger.sqlite'}", urls, **settings))
    return path


def forwarded_lines(tmp_path: Path, source: str) -> list[dict]:
    path = tmp_path / f"forwarded-{source}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(predicate, timeout: float, step: float = 0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


# -- deadlines and the breaker ---------------------------------------------------------------------


def test_a_paheko_read_never_outlasts_its_deadline(tmp_path):
    server = paheko(tmp_path)
    try:
        server._server.app.faults.add("delay", times=20, seconds=5)
        config = load_config(write_config(tmp_path, {"hung": server.url}, deadline=1.0, read_timeout=30))
        client = PahekoClient("hung", config.sources["hung"].paheko)
        started = time.monotonic()
        with pytest.raises(PahekoUnavailable):
            client.sql("SELECT 1")
        # retries × read timeout would be 5 × 30 s; one delayed answer alone takes 5 s
        assert time.monotonic() - started < 4.0
        client.close()
    finally:
        server.stop()


def test_breaker_backs_off_doubling_and_closes_on_success():
    now = [0.0]
    breaker = Breaker(rng=__import__("random").Random(1), clock=lambda: now[0])
    assert breaker.wait() == 0
    first = breaker.failed()
    second = breaker.failed()
    third = breaker.failed()
    assert 4 <= first <= 6 and 8 <= second <= 12 and 16 <= third <= 24
    assert breaker.is_open
    now[0] += third + 0.1
    assert not breaker.is_open  # half-open: one try allowed
    breaker.succeeded()
    assert breaker.failures == 0 and breaker.failed() <= 6
    for _ in range(20):
        cooldown = breaker.failed()
    assert cooldown <= 300 * 1.2


# -- isolation ---------------------------------------------------------------------------------------


def test_a_hung_and_a_failing_source_do_not_hold_back_the_others(tmp_path):
    healthy_server, hung_server, failing_server = paheko(tmp_path, "ok"), paheko(tmp_path, "hung"), paheko(tmp_path, "503")
    hung_server._server.app.faults.add("delay", times=1000, seconds=30)
    failing_server._server.app.faults.add("server_error", times=100_000, status=503)
    healthy = [f"ok{n}" for n in range(8)]
    urls = {name: healthy_server.url for name in healthy} | {"hung": hung_server.url, "failing": failing_server.url}
    config = load_config(write_config(tmp_path, urls, deadline=3.0, read_timeout=30))
    ledger = Ledger(config.receiver.ledger_url)
    ledger.migrate()
    for session in (1, 2):
        for name in urls:
            ledger.record_notification(name, session, {}, origin="module")
    runner = Runner(config, ledger, threads=1, poll=False).start()
    try:
        def healthy_done():
            return all(ledger.get(name, s).state == State.FORWARDED for name in healthy for s in (1, 2))

        # All healthy: a fraction of a second. The hung source alone answers after 30 s per request.
        assert wait_for(healthy_done, timeout=25), [ledger.get(n, 1).state for n in healthy]
        assert {ledger.get("hung", s).state for s in (1, 2)} <= {State.NOTIFIED, State.FAILED}
        assert wait_for(lambda: runner.breakers["failing"].is_open, timeout=10)
        failing = ledger.get("failing", 1)
        assert failing.state in (State.NOTIFIED, State.FAILED)
        # The breaker paused the failing source instead of spending an attempt every 5 s.
        assert failing.attempts <= 2
        for name in healthy:
            assert len(forwarded_lines(tmp_path, name)) == 2  # one line per session, once
    finally:
        runner.stop(grace=1)
        ledger.close()
        for server in (healthy_server, hung_server, failing_server):
            server.stop()


# -- wake-up -----------------------------------------------------------------------------------------

NOTIFY_FROM_ANOTHER_PROCESS = textwrap.dedent("""
    import sys
    from receiver.ledger import Ledger
    ledger = Ledger(sys.argv[1])
    ledger.record_notification("lab", int(sys.argv[2]), {}, origin="module")
    ledger.close()
""")


@pytest.mark.parametrize("deep", [False, True], ids=["short path", "path beyond sun_path"])
def test_an_idle_worker_is_woken_by_a_commit_in_another_process(tmp_path, monkeypatch, deep):
    monkeypatch.setattr(wakeup_module, "FALLBACK_SECONDS", 60.0)  # only the poke can wake it in time
    directory = tmp_path / ("d" * 60) / ("e" * 60) if deep else tmp_path
    directory.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{directory / 'ledger.sqlite'}"
    with listening(url, "lab", "other") as (ledger, (lab, other)):
        lab.clear(), other.clear()
        subprocess.run([sys.executable, "-c", NOTIFY_FROM_ANOTHER_PROCESS, url, "7"], check=True, cwd=ROOT,
                       timeout=60)
        assert lab.wait(10), "no wake-up for the source that was notified"
        assert not other.is_set()  # the poke names its source
        assert ledger.get("lab", 7).state == State.NOTIFIED
    assert not [p for p in Path(str(directory / "ledger.sqlite") + ".wake").iterdir()]  # socket removed


def test_without_pokes_the_worker_still_sees_new_commits(tmp_path, monkeypatch):
    monkeypatch.setattr(wakeup_module, "FALLBACK_SECONDS", 0.05)
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    listening, writing = Ledger(url), Ledger(url)
    listening.migrate()
    writing.wakeup.committed = lambda source: None  # e.g. a receiver that cannot reach the socket
    doorbell = Doorbell()
    bell = doorbell.subscribe("lab")
    stop = listening.wakeup.listen(doorbell)
    try:
        time.sleep(0.2)
        bell.clear()
        writing.record_notification("lab", 3, {}, origin="module")
        assert bell.wait(10)
    finally:
        stop()
        listening.close(), writing.close()


def test_a_socket_left_by_a_killed_worker_is_removed(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    ledger.migrate()
    directory = Path(str(tmp_path / "ledger.sqlite") + ".wake")
    directory.mkdir()
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(directory / "1-dead.sock"))
    dead.close()  # the worker died: the file stays, nobody reads it
    ledger.record_notification("lab", 1, {}, origin="module")
    assert not (directory / "1-dead.sock").exists()
    ledger.close()


def test_the_runner_starts_on_a_notification_without_waiting_for_its_idle_timeout(tmp_path, monkeypatch):
    monkeypatch.setattr(wakeup_module, "FALLBACK_SECONDS", 60.0)
    monkeypatch.setattr("receiver.runner.IDLE_MAX", 60.0)
    server = paheko(tmp_path)
    config = load_config(write_config(tmp_path, {"lab": server.url}))
    ledger = Ledger(config.receiver.ledger_url)
    ledger.migrate()
    runner = Runner(config, ledger, poll=False).start()
    try:
        time.sleep(0.3)  # the lane found nothing and sleeps (up to 60 s)
        subprocess.run([sys.executable, "-c", NOTIFY_FROM_ANOTHER_PROCESS, config.receiver.ledger_url, "1"],
                       check=True, cwd=ROOT, timeout=60)
        assert wait_for(lambda: ledger.get("lab", 1).state == State.FORWARDED, timeout=20)
    finally:
        runner.stop(grace=2)
        ledger.close()
        server.stop()


# -- claims: heartbeat, crashes, SIGTERM ---------------------------------------------------------------


def test_the_heartbeat_keeps_a_long_step_claimed(tmp_path):
    server = paheko(tmp_path)
    server._server.app.faults.add("delay", seconds=2)
    config = load_config(write_config(tmp_path, {"lab": server.url}))
    ledger = Ledger(config.receiver.ledger_url)
    ledger.migrate()
    ledger.record_notification("lab", 1, {}, origin="module")
    worker = Worker(config, ledger, lease=timedelta(seconds=0.3))
    entry = worker.claim()
    done = threading.Thread(target=worker.process_claimed, args=(entry,))
    done.start()
    try:
        time.sleep(1.0)  # three leases later, still working: the claim must still be ours
        assert ledger.claim("intruder") is None
        done.join(30)
        assert ledger.get("lab", 1).state == State.FORWARDED
    finally:
        worker.close()
        ledger.close()
        server.stop()


def start_worker(config_path: Path) -> subprocess.Popen:
    env = {**os.environ, "PAHEKO_RECYCLIC_LOG_LEVEL": "warning"}
    return subprocess.Popen([sys.executable, "-c", "from receiver.cli import main; main()", "--config",
                             str(config_path), "worker"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_the_entry_of_a_killed_worker_is_taken_over_within_seconds(tmp_path):
    server = paheko(tmp_path)
    server._server.app.faults.add("delay", times=5, seconds=20)
    path = write_config(tmp_path, {"lab": server.url}, lease=1.0)
    config = load_config(path)
    ledger = Ledger(config.receiver.ledger_url)
    ledger.migrate()
    ledger.record_notification("lab", 1, {}, origin="module")
    process = start_worker(path)
    try:
        assert wait_for(lambda: ledger.get("lab", 1).claimed_by, timeout=30), process.stdout
        time.sleep(2.5)  # beyond two leases: the heartbeat is what keeps it claimed
        assert ledger.claim("other") is None
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        killed = time.monotonic()
        assert wait_for(lambda: ledger.claim("other"), timeout=15) is not None
        assert time.monotonic() - killed < 15  # was: the full 10-minute lease
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        ledger.close()
        server.stop()


@pytest.mark.parametrize("moment", ["idle", "in a hung read"])
def test_sigterm_ends_the_worker_within_ten_seconds_losing_nothing(tmp_path, moment):
    server = paheko(tmp_path)
    path = write_config(tmp_path, {"lab": server.url}, lease=2.0)
    config = load_config(path)
    ledger = Ledger(config.receiver.ledger_url)
    ledger.migrate()
    if moment == "in a hung read":
        server._server.app.faults.add("delay", times=3, seconds=40)
        ledger.record_notification("lab", 1, {}, origin="module")
    process = start_worker(path)
    try:
        assert "Worker running" in process.stdout.readline()  # signal handlers installed
        if moment == "in a hung read":
            assert wait_for(lambda: ledger.get("lab", 1).claimed_by, timeout=30)
            time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=10)
        assert process.returncode == 0, output
        assert "Worker stopped" in output
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    if moment == "in a hung read":
        entry = ledger.get("lab", 1)
        assert entry.state == State.NOTIFIED and entry.attempts == 0  # nothing recorded of the cut step
        server._server.app.faults.clear()
        time.sleep(2.1)  # the abandoned claim expires
        worker = Worker(config, ledger)
        worker.run_once()
        worker.close()
        assert ledger.get("lab", 1).state == State.FORWARDED
        assert len(forwarded_lines(tmp_path, "lab")) == 1
    ledger.close()
    server.stop()
