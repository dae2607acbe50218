"""Recyclic is the record: a restored, deleted or stale ledger never puts a sale in Recyclic twice.

End to end (local Paheko, local Recyclic v2, receiver, worker), the ledger is restored from a backup taken
before forwarding, or deleted, Recyclic's idempotency keys are flushed (its Redis restarted: they are its
only memory of requests), and the sessions are forwarded again: Recyclic still holds each ticket once and
one session per Paheko session. Also: an orphan empty session is closed and reported, and a sink's login
is shared by threads and paced across restarts.
"""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from receiver.dev.recyclic import MAIN_SITE, REPLAY_REGISTER, Fault
from receiver.ledger import Ledger, State
from receiver.ledger.maintenance import backup, restore
from receiver.sinks.recyclic.client import LOGIN_BUDGET, LedgerLoginLog, RecyclicClient, RecyclicRateLimited
from receiver.dev.server import LocalServer
from receiver.outcomes import MustAct, NotSent, RetryLater
from receiver.sinks.recyclic.mapping.model import dump_mapped
from receiver.sinks.recyclic.profiles import opening_marker
from receiver.sinks.recyclic.sink import RecyclicSink, _Delivering
from tests.forward_support import assert_exactly_once
from tests.forward_support import OPERATOR, Swappable, deliver, mapped_session, new_entry, new_ledger, plug
from tests.test_pipeline import EXPECTED_TABS, pipeline  # noqa: F401 (the end-to-end fixture)


def flush_idempotency(recyclic_app) -> None:
    """Recyclic's Redis restarted: every idempotency key is gone."""
    recyclic_app.store.flush_redis()


def recyclic_state(p) -> tuple[dict, int, int]:
    """(sales per Paheko (session, tab), Recyclic sessions, open Recyclic sessions)."""
    sessions = list(p.recyclic_app.store.new_sessions().values())  # the shop's own sessions left aside
    return dict(p.sales_by_tab()), len(sessions), len([s for s in sessions if s.status == "open"])


def forward_all(p) -> None:
    p.run()
    entries = p.ledger.list()
    assert entries and {e.state for e in entries} == {State.FORWARDED}, [(e.session_id, e.reason) for e in entries]


def test_restoring_an_old_ledger_backup_then_forwarding_again_duplicates_nothing(pipeline, tmp_path):
    worker = pipeline.worker()
    worker.poll_due_sources(force=True)  # both sessions queued, nothing sent yet
    worker.close()
    saved = tmp_path / "before.sqlite"
    backup(pipeline.ledger.url, saved)
    forward_all(pipeline)
    first = recyclic_state(pipeline)
    assert set(first[0]) >= EXPECTED_TABS and set(first[0].values()) == {1} and first[1] == 2

    pipeline.ledger.close()
    restore(saved, pipeline.ledger.url, force=True)  # the documented procedure, from an older backup
    assert {e.state for e in pipeline.ledger.list()} == {State.NOTIFIED}
    flush_idempotency(pipeline.recyclic_app)
    forward_all(pipeline)
    assert recyclic_state(pipeline) == first  # same tickets once each, same two sessions, none left open
    for entry in pipeline.ledger.list():  # the restored ledger learnt Recyclic's ids back
        records = pipeline.ledger.forwards_of(entry.id)
        assert all(f.status == "done" for f in records.values())
        assert any("Retrouvé" in (f.detail or "") for (kind, _), f in records.items() if kind == "sale")
        assert any("retrouvée" in n["text"] for n in pipeline.ledger.notes_of(entry.id))  # and says so


def test_deleting_the_ledger_then_forwarding_again_duplicates_nothing(pipeline):
    forward_all(pipeline)
    first = recyclic_state(pipeline)
    url = pipeline.ledger.url
    pipeline.ledger.close()
    path = Path(url.removeprefix("sqlite:///"))
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)
    pipeline.ledger.migrate()
    flush_idempotency(pipeline.recyclic_app)
    forward_all(pipeline)  # the poller finds every session again
    assert len(pipeline.ledger.list()) == 2
    assert recyclic_state(pipeline) == first


_TARGET = Swappable()


@pytest.fixture(scope="module")
def served():
    with LocalServer(_TARGET) as server:
        _TARGET.url = server.url
        yield


@pytest.fixture
def ledger(tmp_path) -> Ledger:
    ledger = new_ledger(tmp_path)
    yield ledger
    ledger.close()


def test_an_orphan_empty_session_is_closed_and_reported(served, ledger):
    stand = plug(_TARGET, "v2")
    mapped = mapped_session(session_id=7)
    opening = {"operator_id": OPERATOR, "site_id": MAIN_SITE.id, "register_id": REPLAY_REGISTER.id,
               "initial_amount": 50.0, "opened_at": mapped.opening.opened_at}
    # Two openings of this Paheko session whose answers were lost (or a ledger restored in between).
    orphans = [stand.app.store.open_session(opening).id for _ in range(2)]
    entry = new_entry(ledger, 7)
    flush_idempotency(stand.app)
    delivery = deliver(RecyclicSink(stand.config()), entry, mapped, ledger)
    assert delivery.reference in orphans  # one adopted, no third one opened
    other = next(i for i in orphans if i != delivery.reference)
    left = stand.app.store.sessions.get(other)
    assert left is None or (left.status == "closed" and not left.sale_ids)  # closing an empty one deletes it
    assert [s for s in stand.sessions() if s.status == "open"] == []
    assert len([s for s in stand.sessions() if s.sale_ids]) == 1
    texts = [n["text"] for n in ledger.notes_of(entry.id)]
    assert any(delivery.reference in t and "reprise" in t for t in texts), texts
    assert any(other in t and "supprimée" in t for t in texts), texts
    assert list(delivery.notes) == texts


def test_a_refused_connection_records_nothing_to_settle(served, ledger):
    stand = plug(_TARGET, "v2")
    entry = new_entry(ledger, 7)
    closed = LocalServer(_TARGET).start()
    url = closed.url
    closed.stop()  # nothing listens there any more: connections are refused
    sink = RecyclicSink(stand.config(url=url + "/v1"))
    with pytest.raises(NotSent):
        deliver(sink, entry, mapped_session(), ledger)
    assert ledger.forwards_of(entry.id) == {}  # nothing "sending": no false "a session may exist" warning
    assert ledger.notes_of(entry.id) == []


def test_one_login_per_process_shared_by_threads(served, ledger):
    stand = plug(_TARGET, "v2")
    sink = RecyclicSink(stand.config(), ledger=ledger)
    errors = []

    def work(n: int) -> None:
        try:
            deliver(sink, new_entry(ledger, 100 + n), mapped_session(session_id=100 + n, close=False), ledger)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert stand.log.count("POST", "/auth/login") == 1


def test_logins_are_paced_across_restarts(served, ledger):
    stand = plug(_TARGET, "v2", token_lifetime=timedelta(seconds=30))
    logins = LedgerLoginLog(ledger, "recyclic.logins:test")
    for _ in range(LOGIN_BUDGET):  # each "process" starts, logs in once, and dies
        with RecyclicClient(stand.config(), logins=logins) as client:
            client.sites()
    with RecyclicClient(stand.config(), logins=LedgerLoginLog(ledger, "recyclic.logins:test")) as restarted:
        with pytest.raises(RecyclicRateLimited) as limited:
            restarted.sites()
    assert limited.value.sent is False and 0 < limited.value.retry_after <= 60
    assert stand.log.count("POST", "/auth/login") == LOGIN_BUDGET


def test_a_failed_lazy_login_leaves_no_sending_record(served, ledger):
    stand = plug(_TARGET, "v2")
    entry = new_entry(ledger, 7)
    stand.app.faults.script("POST /auth/login", Fault.error(503))
    with pytest.raises(NotSent):  # the first login: before anything is recorded
        deliver(RecyclicSink(stand.config()), entry, mapped_session(), ledger)
    assert ledger.forwards_of(entry.id) == {}
    sink = RecyclicSink(stand.config())
    sink.client.sites()  # logged in
    # Mid-delivery, Recyclic drops the token (401) and the refresh that follows fails: the sale never left.
    stand.app.faults.script("POST /sales/", Fault.error(401))
    stand.app.faults.script("POST /auth/refresh", Fault.error(503))
    with pytest.raises(NotSent):
        deliver(sink, entry, mapped_session(), ledger)
    records = {key: f.status for key, f in ledger.forwards_of(entry.id).items()}
    assert records == {("session", 7): "done"}  # the session is open; no sale is "sending"
    delivery = deliver(sink, entry, mapped_session(), ledger)
    assert len(delivery.sales) == 3 and len(stand.sales()) == 3


@pytest.mark.parametrize("owned", [False, True])
def test_legacy_already_open_is_retried_naming_the_blocking_session_not_held(served, ledger, owned):
    stand = plug(_TARGET, "legacy")
    if owned:  # a previous Paheko session of this source, forwarded without closing, still open
        blocker = deliver(RecyclicSink(stand.config()), new_entry(ledger, 6),
                          mapped_session("legacy", session_id=6, close=False), ledger).reference
    else:  # someone opened the replay register by hand
        blocker = stand.app.store.open_session({"operator_id": OPERATOR, "site_id": MAIN_SITE.id,
                                                "register_id": REPLAY_REGISTER.id, "initial_amount": 0}).id
    entry = new_entry(ledger, 7)
    with pytest.raises(RetryLater) as retry:
        deliver(RecyclicSink(stand.config()), entry, mapped_session("legacy"), ledger)
    assert not isinstance(retry.value, MustAct) and retry.value.retry_after
    assert blocker in retry.value.reason
    assert ("session Paheko 6" in retry.value.reason) == owned
    assert ledger.forwards_of(entry.id) == {}  # refused: nothing opened, nothing to settle
    stand.app.store.close_session(blocker, {"actual_amount": 0.0, "variance_comment": "test"})
    delivery = deliver(RecyclicSink(stand.config()), entry, mapped_session("legacy"), ledger)
    assert delivery.closed and len(delivery.sales) == 3


def test_without_a_sink_sessions_wait_and_resend_moves_them_to_the_current_sink_once(pipeline, tmp_path):
    from click.testing import CliRunner

    from receiver.cli import main

    path = tmp_path / "config.toml"
    with_recyclic = path.read_text()
    head, _, _ = with_recyclic.partition("[sources.lab.sink]")
    out = tmp_path / "sessions.jsonl"

    def cli(*args):
        result = CliRunner().invoke(main, ["--config", str(path), *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    path.write_text(head)  # no sink written yet (what `init` leaves)
    cli("worker", "--once")
    entries = pipeline.ledger.list()
    assert {e.state for e in entries} == {State.FAILED} and all(e.attempts == 0 for e in entries)
    assert all("Aucune destination configurée" in e.reason for e in entries)
    assert all(e.snapshot is not None for e in entries)  # re-read while waiting
    assert "none configured" in cli("status") and pipeline.recyclic_app.store.new_sales() == {}

    path.write_text(head + f'[sources.lab.sink]\ntype = "file"\npath = "{out}"\n')
    cli("ledger", "retry", "--source", "lab")
    cli("worker", "--once")
    assert {e.state for e in pipeline.ledger.list()} == {State.FORWARDED} and len(out.read_text().splitlines()) == 2

    path.write_text(with_recyclic)  # the operator now points the source at Recyclic
    assert "0 entries" in cli("ledger", "release", "--source", "lab")  # release never touched forwarded ones…
    for _ in range(2):  # … resend does, and twice changes nothing in Recyclic
        assert "2 entries queued" in cli("ledger", "resend", "--source", "lab", "--state", "forwarded")
        cli("worker", "--once")
        assert {e.state for e in pipeline.ledger.list()} == {State.FORWARDED}
        by_tab = pipeline.sales_by_tab()
        assert set(by_tab) >= EXPECTED_TABS and set(by_tab.values()) == {1}
        assert len(pipeline.recyclic_app.store.new_sessions()) == 2

    path.write_text(head + f'[sources.lab.sink]\ntype = "file"\npath = "{out}"\n')
    cli("ledger", "resend", "--source", "lab", "--state", "forwarded")
    cli("worker", "--once")
    assert len(out.read_text().splitlines()) == 2  # found in the file: not written again


def test_a_session_changed_after_its_tickets_were_sent_is_held_then_says_ticket_by_ticket(pipeline):
    import sqlite3

    forward_all(pipeline)
    before = recyclic_state(pipeline)
    con = sqlite3.connect(pipeline.paheko_db)  # in Paheko, ticket 8 is corrected: 5 books at 1,40 €, not 1,00 €
    with con:
        con.execute("UPDATE plugin_pos_tabs_items SET price = 140, total = 700 WHERE tab = 8")
        con.execute("UPDATE plugin_pos_tabs_payments SET amount = 700 WHERE tab = 8")
        con.execute("UPDATE plugin_pos_sessions SET result = result + 200 WHERE id = 2")
        con.execute("UPDATE plugin_pos_sessions_balances SET close_amount = close_amount + 200 "
                    "WHERE id_session = 2 AND id_method = 1")
    con.close()
    answer = pipeline.notify(2)
    assert answer["outcome"] == "changed" and answer["state"] == "held"
    reason = pipeline.ledger.get("lab", 2).reason
    assert "72,90 € → 74,90 €" in reason and "ne seront pas renvoyés" in reason, reason

    entry = pipeline.ledger.get("lab", 2)  # the admin chooses to release it (ledger release)
    pipeline.ledger.transition(entry.id, State.NOTIFIED, reason="Libérée par un opérateur.", snapshot=None, mapped=None)
    forward_all(pipeline)
    assert recyclic_state(pipeline) == before  # nothing posted twice
    texts = [n["text"] for n in pipeline.ledger.notes_of(entry.id)]
    assert any("ticket 8 vaut 5,00 € dans Recyclic" in t and "7,00 € dans Paheko" in t for t in texts), texts


# -- two Paheko sessions opened the same second at the same place ------------------------------------------


def _store_mapped(ledger: Ledger, entry, mapped) -> None:
    """What the worker does before delivering: the mapped document kept on the entry."""
    ledger.transition(entry.id, State.MAPPED, mapped=dump_mapped(mapped))


def test_same_second_openings_in_two_threads_each_keep_their_own_session(served, ledger, monkeypatch):
    """Thread A's opening has left (Recyclic holds it, still empty) but its record has no Recyclic id yet when
    thread B looks for B's session at the same place and second: B must neither adopt it nor close it."""
    stand = plug(_TARGET, "v2")
    sink = RecyclicSink(stand.config(), ledger=ledger)
    a, b = mapped_session(session_id=21), mapped_session(session_id=22)
    assert a.opening == b.opening  # same site, register, operator and second
    entries = {21: new_entry(ledger, 21), 22: new_entry(ledger, 22)}
    for mapped in (a, b):
        _store_mapped(ledger, entries[mapped.session_id], mapped)
    results: dict[int, object] = {}
    real_open = _Delivering.open_session

    def run(mapped) -> None:
        try:
            results[mapped.session_id] = deliver(sink, entries[mapped.session_id], mapped, ledger)
        except Exception as exc:  # reported by the assertions below
            results[mapped.session_id] = exc

    def open_then_let_b_run(self):
        opened = real_open(self)  # the POST has left; A's record is still "sending", without Recyclic's id
        if self.mapped.session_id == 21:
            assert ledger.forwards_of(entries[21].id)[("session", 21)].status == "sending"
            other = threading.Thread(target=run, args=(b,))
            other.start()
            other.join()
        return opened

    monkeypatch.setattr(_Delivering, "open_session", open_then_let_b_run)
    first = threading.Thread(target=run, args=(a,))
    first.start()
    first.join()
    assert not any(isinstance(r, Exception) for r in results.values()), results
    assert results[21].reference != results[22].reference
    assert_exactly_once(stand, a, results[21].reference)
    assert_exactly_once(stand, b, results[22].reference)
    assert len(stand.sessions()) == 2 and all(s.status == "closed" for s in stand.sessions())
    assert not [n for e in entries.values() for n in ledger.notes_of(e.id) if "en trop" in n["text"]]
    # The two openings are told apart by the microseconds Recyclic keeps; people still see Paheko's second.
    opened = {stand.app.store.sessions[results[n].reference].opened_at for n in (21, 22)}
    assert {t.replace(microsecond=0) for t in opened} == {a.opening.opened_at} and len(opened) == 2
    assert {t.microsecond for t in opened} == {opening_marker("lab", 21), opening_marker("lab", 22)}
    assert json.loads(ledger.list()[0].mapped_json)["opening"]["opened_at"] == a.opening.opened_at.isoformat()


def test_same_second_sessions_are_found_again_after_the_ledger_is_deleted(served, tmp_path, monkeypatch):
    """Both openings went through but no sale yet (two empty sessions, same place and second), then the
    ledger is lost: each Paheko session takes back its own Recyclic session; none is closed, none added."""
    stand = plug(_TARGET, "v2")
    a, b = mapped_session(session_id=31), mapped_session(session_id=32, close=False)
    first_ledger = Ledger(f"sqlite:///{tmp_path / 'first.sqlite'}")
    first_ledger.migrate()
    real_post_sales = _Delivering.post_sales

    def fail_sales(self, session_id):
        raise RetryLater("Recyclic indisponible", "test: sales not sent")

    monkeypatch.setattr(_Delivering, "post_sales", fail_sales)
    opened = {}
    for mapped in (a, b):
        entry = new_entry(first_ledger, mapped.session_id)
        with pytest.raises(RetryLater):
            deliver(RecyclicSink(stand.config()), entry, mapped, first_ledger)
        opened[mapped.session_id] = first_ledger.forwards_of(entry.id)[("session", mapped.session_id)].sink_id
    first_ledger.close()
    assert len(stand.sessions()) == 2 and not any(s.sale_ids for s in stand.sessions())

    monkeypatch.setattr(_Delivering, "post_sales", real_post_sales)
    ledger = new_ledger(tmp_path)  # a new, empty ledger: nothing says which session is whose
    try:
        flush_idempotency(stand.app)
        for mapped in (a, b):
            entry = new_entry(ledger, mapped.session_id)
            delivery = deliver(RecyclicSink(stand.config()), entry, mapped, ledger)
            assert delivery.reference == opened[mapped.session_id]
            assert_exactly_once(stand, mapped, delivery.reference)
            assert not [n for n in ledger.notes_of(entry.id) if "en trop" in n["text"]]
        assert len(stand.sessions()) == 2
        assert {s.id: s.status for s in stand.sessions()} == {opened[31]: "closed", opened[32]: "open"}
    finally:
        ledger.close()


def test_an_unmarked_empty_session_is_left_alone_while_another_opening_at_that_second_is_unsettled(
        served, ledger):
    """An empty session opened by an older receiver (whole second, no marker) at the second another Paheko
    session's opening is still unsettled may be that one's: it is neither taken nor closed; once that one is
    settled it takes it back."""
    stand = plug(_TARGET, "v2")
    a, b = mapped_session(session_id=41), mapped_session(session_id=42)
    body = {"operator_id": OPERATOR, "site_id": MAIN_SITE.id, "register_id": REPLAY_REGISTER.id,
            "initial_amount": 50.0, "opened_at": a.opening.opened_at}
    legacy = stand.app.store.open_session(body).id  # A's opening by an older receiver, answer lost
    entry_a, entry_b = new_entry(ledger, 41), new_entry(ledger, 42)
    _store_mapped(ledger, entry_a, a)
    ledger.record_forward(entry_a.id, "session", 41, status="sending")
    delivered_b = deliver(RecyclicSink(stand.config()), entry_b, b, ledger)
    assert delivered_b.reference != legacy
    assert stand.app.store.sessions[legacy].status == "open" and not stand.app.store.sessions[legacy].sale_ids
    delivered_a = deliver(RecyclicSink(stand.config()), entry_a, a, ledger)
    assert delivered_a.reference == legacy  # its lost opening, settled: no third session
    assert_exactly_once(stand, a, legacy)
    assert_exactly_once(stand, b, delivered_b.reference)
    assert len(stand.sessions()) == 2 and all(s.status == "closed" for s in stand.sessions())


@pytest.mark.parametrize("profile", ["v2", "legacy"])
def test_a_sale_is_fsynced_before_it_leaves_only_where_recyclic_cannot_find_it_again(served, ledger, monkeypatch,
                                                                                      profile):
    """v2 keeps the note, by which a sale is found again whatever the ledger lost: its ``sending`` record is
    committed (a crash keeps it) without an fsync. Recyclic 1.3 drops the note: the record must survive a
    power cut. The session's own opening stays fsync'd in both."""
    stand = plug(_TARGET, profile)
    seen: list[tuple[str, str, bool | None]] = []
    record = ledger.record_forward

    def spy(entry_id, kind, paheko_id, *, status, durable=None, **kw):
        seen.append((kind, status, durable))
        return record(entry_id, kind, paheko_id, status=status, durable=durable, **kw)

    monkeypatch.setattr(ledger, "record_forward", spy)
    deliver(RecyclicSink(stand.config()), new_entry(ledger, 7), mapped_session(profile), ledger)
    sales = [durable for kind, status, durable in seen if kind == "sale" and status == "sending"]
    assert sales == [profile == "legacy"] * 3
    assert [d for kind, status, d in seen if kind == "session" and status == "sending"] == [True]


def test_a_v2_sale_whose_sending_record_a_power_cut_lost_is_found_by_its_note_not_sent_again(served, ledger):
    """A power cut keeps a prefix of the ledger: the last sale's records (and all after) gone, its POST made."""
    stand = plug(_TARGET, "v2")
    entry = new_entry(ledger, 7)
    first = deliver(RecyclicSink(stand.config()), entry, mapped_session(close=False), ledger)
    assert len(stand.sales()) == 3
    last = max(first.sales)
    with ledger.transaction() as conn:
        conn.exec_driver_sql("DELETE FROM forwards WHERE entry_id = ? AND kind = 'sale' AND paheko_id = ?",
                             (entry.id, last))
    again = deliver(RecyclicSink(stand.config()), entry, mapped_session(close=False), ledger)
    assert len(stand.sales()) == 3 and again.sales == first.sales
    assert ledger.forwards_of(entry.id)[("sale", last)].status == "done"
