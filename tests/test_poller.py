"""The reconciliation poller: finds every closed session no notification announced."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest

from receiver.ledger import Ledger
from receiver.reread.poller import PAGE, poll_source
from tests.conftest import FIXTURES
from tests.paheko_db import PahekoDB, reference_data, served


@pytest.fixture
def store(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    ledger.migrate()
    yield ledger
    ledger.close()


@pytest.fixture
def lab(config):
    return config.sources["lab"]


def test_fixture_sessions_are_found_once(tmp_path, store, lab):
    db = tmp_path / "paheko.sqlite"
    shutil.copy(FIXTURES / "paheko-caisse.sqlite", db)
    with served(db) as (client, app):
        first = poll_source(lab, client, store)
        assert first.found == [1, 2] and first.requests == 1
        second = poll_source(lab, client, store)
    assert second.found == [] and second.watermark_before == 3
    entry = store.get("lab", 1)
    assert entry.origin == "poller" and entry.summary == {"closed": "2026-11-24 01:18:22"}
    assert [n["origin"] for n in store.notifications_of(entry.id)] == ["poller"]


def test_notified_sessions_are_not_queued_again(tmp_path, store, lab):
    db = tmp_path / "paheko.sqlite"
    shutil.copy(FIXTURES / "paheko-caisse.sqlite", db)
    store.record_notification("lab", 2, {"result": 7290}, origin="module")
    with served(db) as (client, _):
        assert poll_source(lab, client, store).found == [1]
    assert store.get("lab", 2).origin == "module"


def test_a_low_id_closing_late_is_not_skipped(tmp_path, store, lab):
    with PahekoDB(tmp_path / "p.sqlite") as db:
        ids = reference_data(db)
        early = db.open_session("2026-12-01 09:00:00", location=ids["shop"], cash={ids["cash"]: 0})
        late = db.open_session("2026-12-01 09:05:00", location=ids["annex"], cash={ids["annex_cash"]: 0})
        db.close_session(late, "2026-12-01 12:00:00", {ids["annex_cash"]: 0})
        with served(db.path) as (client, _):
            first = poll_source(lab, client, store)
            assert first.found == [late] and first.open == [early] and first.watermark_after == late + 1
            db.close_session(early, "2026-12-01 18:00:00", {ids["cash"]: 0})
            third_id = db.open_session("2026-12-02 09:00:00", cash={ids["cash"]: 0})
            second = poll_source(lab, client, store)
            assert second.found == [early] and second.open == [third_id]
            db.close_session(third_id, "2026-12-02 18:00:00", {ids["cash"]: 0})
            assert poll_source(lab, client, store).found == [third_id]


def test_sessions_closed_while_down_are_found_at_next_start(tmp_path, lab):
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    with PahekoDB(tmp_path / "p.sqlite") as db:
        ids = reference_data(db)
        one = db.open_session("2026-12-01 09:00:00", cash={ids["cash"]: 0})
        db.close_session(one, "2026-12-01 18:00:00", {ids["cash"]: 0})
        with served(db.path) as (client, _):
            before = Ledger(url)
            before.migrate()
            assert poll_source(lab, client, before).found == [one]
            before.close()  # the receiver stops
            two = db.open_session("2026-12-02 09:00:00", cash={ids["cash"]: 0})
            db.close_session(two, "2026-12-02 18:00:00", {ids["cash"]: 0})
            after = Ledger(url)  # and starts again, with the watermark it left
            report = poll_source(lab, client, after)
            after.close()
    assert report.found == [two] and report.watermark_before == one + 1


def test_first_session_setting_skips_history(tmp_path, store, lab):
    db = tmp_path / "paheko.sqlite"
    shutil.copy(FIXTURES / "paheko-caisse.sqlite", db)
    recent_only = replace(lab, paheko=replace(lab.paheko, first_session=2))
    with served(db) as (client, _):
        assert poll_source(recent_only, client, store).found == [2]


def test_many_sessions_are_paged(tmp_path, store, lab):
    with PahekoDB(tmp_path / "p.sqlite") as db:
        with db.con:
            db.con.execute("BEGIN")
            for _ in range(PAGE + 20):
                db.con.execute("INSERT INTO plugin_pos_sessions (opened, closed, result, nb_tabs) VALUES "
                               "('2026-12-01 09:00:00', '2026-12-01 10:00:00', 0, 0)")
        with served(db.path) as (client, _):
            report = poll_source(lab, client, store)
    assert len(report.found) == PAGE + 20 and report.requests == 2


def test_an_old_open_session_does_not_make_every_poll_reread_history(tmp_path, store, lab):
    """Issue 13 item 5: with one till left open and a long history, a poll with nothing new stays small."""
    with PahekoDB(tmp_path / "p.sqlite") as db:
        ids = reference_data(db)
        stuck = db.open_session("2026-11-01 09:00:00", cash={ids["cash"]: 0})
        with db.con:
            db.con.execute("BEGIN")
            for _ in range(3 * PAGE):
                db.con.execute("INSERT INTO plugin_pos_sessions (opened, closed, result, nb_tabs) VALUES "
                               "('2026-12-01 09:00:00', '2026-12-01 10:00:00', 0, 0)")
        with served(db.path) as (client, _):
            first = poll_source(lab, client, store)
            assert len(first.found) == 3 * PAGE and first.open == [stuck]
            quiet = [poll_source(lab, client, store) for _ in range(3)]
            assert all(r.found == [] and r.requests == 1 and r.scanned == 1 for r in quiet)
            assert all(r.bytes < 200 for r in quiet)  # one short row: the open session
            db.close_session(stuck, "2026-12-02 18:00:00", {ids["cash"]: 0})
            closed = poll_source(lab, client, store)
    assert closed.found == [stuck] and closed.open == [] and closed.requests == 1


def test_a_ledger_polled_by_the_previous_version_resumes_at_its_watermark(tmp_path, store, lab):
    db = tmp_path / "paheko.sqlite"
    shutil.copy(FIXTURES / "paheko-caisse.sqlite", db)
    store.set_value("poll_watermark:lab", "2")  # session 1 was known below it
    with served(db) as (client, _):
        report = poll_source(lab, client, store)
        assert report.found == [2] and report.watermark_before == 2
        assert poll_source(lab, client, store).scanned == 0
