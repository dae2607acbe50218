"""The command line as a new operator meets it: one tool, no traps, every problem at once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from receiver.cli import main
from receiver.commands.examples import EXAMPLES, walk
from receiver.commands.ledger import table
from receiver.dev.paheko import create_paheko_app
from receiver.dev.server import LocalServer
from tests.conftest import FIXTURES, config_text
from tests.test_readme import resolve, split

PAHEKO_KEY = ("demo", "demoSecret42")


def invoke(*args, env=None):
    return CliRunner().invoke(main, list(args), env=env or {}, catch_exceptions=False)


def test_root_help_shows_only_the_tools_own_options_and_commands():
    text = invoke("--help").output
    for flask_thing in ("--env-file", "-e,", "--app", "-A,", "--debug", " routes ", " shell "):
        assert flask_thing not in text, flask_thing
    commands = set(main.commands)
    assert {"routes", "shell"}.isdisjoint(commands)
    assert commands == {"backfill", "check-config", "demo", "dev", "init", "ledger", "maintenance", "mapping",
                        "module", "poll", "replay", "report", "run", "status", "worker"}


def test_every_command_has_an_example_that_still_parses():
    for path, command in walk(main):
        text = invoke(*path.split(), "--help").output
        assert "Example" in text or "Quick start" in text, path
        for line in EXAMPLES.get(path, ()):
            _, argv = split(line.replace("…", "x"))
            found, _, _ = resolve(argv)
            assert found == path or found.startswith(path + " "), (line, found)


def test_check_config_reports_a_duplicate_user_together_with_other_problems(tmp_path):
    path = tmp_path / "c.toml"
    text = config_text(tmp_path).replace('user = "other"', 'user = "u"').replace('"America/Montreal"', '"Mars/Olympus"')
    path.write_text(text)
    result = invoke("--config", str(path), "check-config")
    assert result.exit_code == 1
    assert "must be unique" in result.output and "sources.other.timezone" in result.output


def test_check_config_names_every_placeholder_left_from_init(tmp_path):
    path = tmp_path / "c.toml"
    invoke("init", str(path))
    result = invoke("--config", str(path), "check-config")
    assert result.exit_code == 1
    assert "sources.lab.paheko.url: still the example's placeholder 'https://paheko.example.org'" in result.output
    assert "sources.lab.paheko.api_password" in result.output
    assert "change-me" not in result.output  # a secret, even a placeholder one, is never printed
    filled = tmp_path / "f.toml"
    invoke("init", str(filled), "--paheko-url", "https://paheko.ressourcerie.fr", "--paheko-user", "bridge",
           "--paheko-password", "RealSecret42")
    assert invoke("--config", str(filled), "check-config").exit_code == 0


def test_init_trusts_the_one_shipped_proxy(tmp_path):
    from receiver.config import load_config

    invoke("init", str(tmp_path / "c.toml"))
    trusted = load_config(tmp_path / "c.toml").receiver.trusted_proxies
    # one hop, or the loopback address the shipped proxies connect from (tests/test_proxies.py runs them)
    assert trusted == 1 or "127.0.0.1" in trusted


@pytest.fixture
def paheko(tmp_path):
    db = tmp_path / "paheko.sqlite"
    shutil.copy(FIXTURES / "paheko-caisse.sqlite", db)
    with LocalServer(create_paheko_app(str(db), {PAHEKO_KEY[0]: (PAHEKO_KEY[1], "read")})) as server:
        yield server


def standin_config(tmp_path: Path, paheko_url: str, *, timezone: str = "Europe/Paris", sink: str = "") -> Path:
    """One source, ``lab``, re-reading the Paheko stand-in (inline tables: the file is not the point here)."""
    path = tmp_path / "c.toml"
    webhook = '{ user = "labmodule", password = "LabPassword42" }'
    paheko = f'{{ url = "{paheko_url}", api_user = "{PAHEKO_KEY[0]}", api_password = "{PAHEKO_KEY[1]}" }}'
    path.write_text(f'[sources.lab]\ntimezone = "{timezone}"\nwebhook = {webhook}\npaheko = {paheko}\n' + sink)
    return path


def test_check_config_online_reaches_paheko_and_the_sink(tmp_path, paheko):
    sink = f'[sources.lab.sink]\ntype = "webhook"\nurl = "{paheko.url}/hook"\nsecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"\n'
    good = standin_config(tmp_path, paheko.url, sink=sink)
    result = invoke("--config", str(good), "check-config", "--online")
    assert result.exit_code == 0, result.output
    assert "/api/sql answers with this key" in result.output and "reachable (HTTP 404)" in result.output
    wrong_key = tmp_path / "w.toml"
    wrong_key.write_text(good.read_text().replace(PAHEKO_KEY[1], "WrongSecret42")
                         .replace(paheko.url + "/hook", "http://127.0.0.1:9/hook"))
    result = invoke("--config", str(wrong_key), "check-config", "--online")
    assert result.exit_code == 1
    assert "FAIL lab: Paheko" in result.output and "unreachable" in result.output
    assert "WrongSecret42" not in result.output


def test_worker_once_honours_threads(tmp_path, paheko):
    path = standin_config(tmp_path, paheko.url)
    result = invoke("--config", str(path), "worker", "--once", "--threads", "3")
    assert result.exit_code == 0, result.output
    assert "with 3 threads" in result.output
    assert invoke("--config", str(path), "worker", "--once", "--threads", "0").exit_code == 2


def run_cli(*args, env=None, **kwargs):
    return subprocess.Popen([str(Path(sys.executable).parent / "paheko-recyclic"), *args],
                            env={**os.environ, "PAHEKO_RECYCLIC_LOG_FORMAT": "", **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_poll_without_once_polls_until_stopped_and_logs_go_to_stderr(tmp_path, paheko):
    path = standin_config(tmp_path, paheko.url)
    process = run_cli("--config", str(path), "poll", env={"PAHEKO_RECYCLIC_LOG_LEVEL": "debug"})
    first = process.stdout.readline()
    assert first.startswith("lab: scanned 2 session(s)"), first
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "{" not in first + out  # the command's own output only
    once = run_cli("--config", str(path), "worker", "--once")
    out, err = once.communicate(timeout=60)
    assert once.returncode == 0 and out.strip() == "Processed 2 entries.", (out, err)
    events = [json.loads(line) for line in err.splitlines() if line.strip()]  # not a terminal: JSON
    assert events and all("event" in e for e in events)


def test_readable_logs_for_a_person():
    import logging

    from receiver.logs import ReadableFormatter

    record = logging.makeLogRecord({"msg": "poll", "levelname": "INFO", "name": "receiver.worker",
                                    "source": "lab", "password": "x", "found": [3]})
    line = ReadableFormatter(["TopSecret1"]).format(record)
    assert line.split()[1:3] == ["info", "poll"] and "source=lab" in line and "{" not in line


def test_tables_wrap_long_reasons_on_words():
    reason = ("La catégorie « Pièces de vélo neuves » n'a pas d'équivalent dans Recyclic : ajoutez-la au "
              "mapping de la source puis libérez la session.")
    text = table(["session", "state", "reason"], [["12", "held", reason], ["3", "failed", "court"]], width=60)
    lines = text.splitlines()
    assert all(len(line) <= 60 for line in lines)
    column = lines[0].index("reason")
    assert " ".join(line[column:].strip() for line in lines[2:-1]) == reason  # nothing cut, nothing lost
    assert lines[-1].split() == ["3", "failed", "court"]


def test_backfill_ends_today_in_the_sources_time_zone(tmp_path, paheko):
    """A session closed today in Kiritimati (UTC+14) is included, whatever the machine's date is."""
    import sqlite3
    from datetime import datetime
    from zoneinfo import ZoneInfo

    now = datetime.now(ZoneInfo("Pacific/Kiritimati")).strftime("%Y-%m-%d 00:00:01")
    con = sqlite3.connect(tmp_path / "paheko.sqlite")
    con.execute("UPDATE plugin_pos_sessions SET closed = ? WHERE id = 2", (now,))
    con.commit()
    con.close()
    path = standin_config(tmp_path, paheko.url, timezone="Pacific/Kiritimati")
    result = invoke("--config", str(path), "backfill", "--source", "lab", "--since", now[:10])
    assert result.exit_code == 0, result.output
    assert f"1 closed session(s) in Paheko between {now[:10]} and {now[:10]}" in result.output


def test_maintenance_prune_clears_in_batches(tmp_path):
    from datetime import timedelta

    from receiver.ledger import Ledger
    from receiver.ledger.maintenance import prune_raw_bodies
    from receiver.ledger.store import utcnow

    ledger = Ledger(f"sqlite:///{tmp_path / 'l.sqlite'}")
    ledger.migrate()
    for session in range(1, 8):
        ledger.record_notification("lab", session, {}, origin="module", raw_body='{"x":1}')
    seen = []
    cleared = prune_raw_bodies(ledger, 1, now=utcnow() + timedelta(days=2), batch=3,
                               progress=lambda done, total: seen.append((done, total)))
    ledger.close()
    assert cleared == 7 and seen == [(3, 7), (6, 7), (7, 7)]


def test_poll_reports_progress_page_by_page(tmp_path, paheko, monkeypatch):
    from receiver.config import load_config
    from receiver.ledger import Ledger
    from receiver.reread import poller
    from receiver.reread.client import PahekoClient

    monkeypatch.setattr(poller, "PAGE", 1)
    source = load_config(standin_config(tmp_path, paheko.url)).sources["lab"]
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.sqlite'}")
    ledger.migrate()
    pages = []
    with PahekoClient("lab", source.paheko) as client:
        total = poller.count_to_scan(source, client, ledger)
        report = poller.poll_source(source, client, ledger, progress=pages.append)
    ledger.close()
    assert total == 2 and sum(pages) == report.scanned == 2 and pages == [1, 1]


def test_ledger_show_tells_both_sides(tmp_path):
    from tests.test_pipeline import build

    p = build(tmp_path)
    try:
        p.notify(1)
        p.run()
        shown = invoke("--config", str(tmp_path / "config.toml"), "ledger", "show", "lab:1")
    finally:
        for server in p._servers:
            server.stop()
        p.ledger.close()
    text = shown.output
    assert shown.exit_code == 0, text
    assert "Paheko: 5 ticket(s), items 124.50 €" in text
    sale_ids = [line.split()[-1] for line in text.splitlines() if line.strip().startswith("sale ")]
    assert len(sale_ids) == 4 and all(len(i) == 36 for i in sale_ids)  # Recyclic's sale uuids
    assert "Left out (recorded, not sent):" in text and "ticket 4" in text
    assert "Reconciliation (Paheko = sent + left out): balanced" in text
    assert "items                        124.50 € =     127.50 € + -3.00 €" in text


def test_run_serves_the_receiver_and_people_get_readable_logs(tmp_path, paheko):
    import httpx

    from receiver.dev.server import free_port

    path = standin_config(tmp_path, paheko.url)
    port = free_port()
    process = run_cli("--config", str(path), "run", "--bind", f"127.0.0.1:{port}",
                      env={"PAHEKO_RECYCLIC_LOG_FORMAT": "text"}, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                answer = httpx.post(f"http://127.0.0.1:{port}/api/paheko/caisse/v1/ping",
                                    auth=("labmodule", "LabPassword42"), timeout=10)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None, "the receiver did not start"
                time.sleep(0.1)
        assert answer.status_code == 200, answer.text
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        _, err = process.communicate(timeout=20)
    assert "LabPassword42" not in err
    readable = [line for line in err.splitlines() if " info " in line or " warning " in line]
    assert readable and not any(line.lstrip().startswith("{") for line in readable)


def test_check_config_online_without_a_sink_yet_is_not_a_problem(tmp_path, paheko):
    result = invoke("--config", str(standin_config(tmp_path, paheko.url)), "check-config", "--online")
    assert result.exit_code == 0, result.output
    assert "no sink configured yet" in result.output
