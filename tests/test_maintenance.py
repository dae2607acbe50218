"""Ledger backup (online, consistent), restore (never over a ledger by accident) and retention."""

from __future__ import annotations

import sqlite3
import threading
import tomllib
from datetime import timedelta

import pytest
from click.testing import CliRunner

from receiver.config import parse_config
from receiver.ledger import Ledger
from receiver.ledger import tables as t
from receiver.ledger.maintenance import (
    MaintenanceError,
    backup,
    inspect_ledger,
    prune_raw_bodies,
    restore,
    sqlite_path,
)
from receiver.commands.maintenance import maintenance_group
from receiver.ledger.store import utcnow
from tests.conftest import config_text


@pytest.fixture
def setup(tmp_path):
    """A configuration file and its (migrated) ledger; yields (config path, ledger)."""
    path = tmp_path / "config.toml"
    path.write_text(config_text(tmp_path, "raw_body_retention_days = 10"))
    config = parse_config(tomllib.loads(path.read_text()), path)
    ledger = Ledger(config.receiver.ledger_url)
    ledger.migrate()
    yield path, ledger
    ledger.close()


def invoke(config_path, *args):
    return CliRunner().invoke(maintenance_group, list(args), env={"PAHEKO_RECYCLIC_CONFIG": str(config_path)})


def record(ledger, session_id, body="{}"):
    return ledger.record_notification("lab", session_id, {"result": session_id}, origin="module", raw_body=body)


def test_backup_while_writers_run_is_consistent(setup, tmp_path):
    _, ledger = setup
    for n in range(1, 21):
        record(ledger, n)
    stop = threading.Event()

    def write():
        n = 1000
        while not stop.is_set():
            n += 1
            record(ledger, n)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        copies = [backup(ledger.url, tmp_path / f"backup-{i}.sqlite") for i in range(3)]
    finally:
        stop.set()
        writer.join()
    for copy in copies:
        assert copy.entries >= 20 and copy.schema_version == t.SCHEMA_VERSION
        with sqlite3.connect(copy.path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # self-contained
            # every entry of the copy has its notification: no half-written transaction
            orphans = conn.execute("SELECT count(*) FROM entries e WHERE NOT EXISTS "
                                   "(SELECT 1 FROM notifications n WHERE n.entry_id = e.id)").fetchone()[0]
            assert orphans == 0
    assert not list(tmp_path.glob(".*.partial"))


def test_backup_refuses_to_replace_a_file_and_postgresql(setup, tmp_path):
    config_path, ledger = setup
    target = tmp_path / "b.sqlite"
    target.write_text("precious")
    result = invoke(config_path, "backup", str(target))
    assert result.exit_code == 1 and "exists already" in result.output and target.read_text() == "precious"
    result = invoke(config_path, "backup", "--force", str(target))
    assert result.exit_code == 0, result.output
    assert inspect_ledger(target).schema_version == t.SCHEMA_VERSION
    with pytest.raises(MaintenanceError, match="pg_dump"):
        sqlite_path("postgresql+psycopg:///paheko_recyclic")


def test_restore_refuses_a_live_ledger_without_force_and_keeps_a_safety_copy(setup, tmp_path):
    config_path, ledger = setup
    record(ledger, 1)
    saved = tmp_path / "saved.sqlite"
    assert invoke(config_path, "backup", str(saved)).exit_code == 0
    record(ledger, 2)  # written after the backup: gone after the restore
    result = invoke(config_path, "restore", str(saved))
    assert result.exit_code == 1 and "--force" in result.output
    assert ledger.get("lab", 2) is not None

    result = invoke(config_path, "restore", "--force", str(saved))
    assert result.exit_code == 0, result.output
    assert ledger.get("lab", 1) is not None and ledger.get("lab", 2) is None
    [safety] = tmp_path.glob("ledger.sqlite.before-restore-*")
    assert inspect_ledger(safety).entries == 2


def test_restore_into_an_empty_place_and_refuses_bad_files(tmp_path):
    source = Ledger(f"sqlite:///{tmp_path / 'a.sqlite'}")
    source.migrate()
    record(source, 5)
    source.close()
    url = f"sqlite:///{tmp_path / 'new' / 'ledger.sqlite'}"
    restored, safety = restore(tmp_path / "a.sqlite", url)
    assert safety is None and restored.entries == 1
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(MaintenanceError, match="not a ledger"):
        restore(tmp_path / "junk.sqlite", url, force=True)
    with pytest.raises(MaintenanceError, match="does not exist"):
        restore(tmp_path / "missing.sqlite", url, force=True)
    newer = tmp_path / "newer.sqlite"
    backup(url, newer)
    with sqlite3.connect(newer) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(t.SCHEMA_VERSION + 1),))
    with pytest.raises(MaintenanceError, match="newer"):
        restore(newer, url, force=True)


def test_prune_clears_only_old_raw_bodies(setup):
    config_path, ledger = setup
    old, recent = record(ledger, 1, '{"old":1}').entry, record(ledger, 2, '{"recent":1}').entry
    with ledger.transaction() as conn:
        conn.execute(t.notifications.update().where(t.notifications.c.entry_id == old.id)
                     .values(received_at=utcnow() - timedelta(days=11)))
    result = invoke(config_path, "prune")  # [receiver] raw_body_retention_days = 10
    assert result.exit_code == 0, result.output
    assert "raw body of 1 notification(s) older than 10 days" in result.output
    assert [n["raw_body"] for n in ledger.notifications_of(old.id)] == [None]
    assert [n["raw_body"] for n in ledger.notifications_of(recent.id)] == ['{"recent":1}']
    assert ledger.get("lab", 1).summary == {"result": 1}  # the figures stay
    assert prune_raw_bodies(ledger, 10) == 0
    assert prune_raw_bodies(ledger, 1, now=utcnow() + timedelta(days=2)) == 1
