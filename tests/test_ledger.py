"""The ledger: migrations, transitions, claims across threads and processes."""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import inspect

from receiver.ledger import Ledger, State
from receiver.ledger.store import utcnow
from receiver.ledger.tables import SCHEMA_VERSION


@pytest.fixture
def store(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.sqlite'}")
    ledger.migrate()
    yield ledger
    ledger.close()


def test_migrate_creates_schema_once(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'sub' / 'l.sqlite'}")
    assert ledger.migrate() == (0, SCHEMA_VERSION)
    assert ledger.migrate() == (SCHEMA_VERSION, SCHEMA_VERSION)
    assert {"entries", "notifications", "state_changes", "meta"} <= set(inspect(ledger.engine).get_table_names())
    with ledger.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    ledger.close()


def test_newer_ledger_is_refused(store):
    with store.transaction() as conn:
        conn.exec_driver_sql("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    with pytest.raises(RuntimeError, match="newer"):
        store.migrate()


def test_transition_records_history_and_guards(store):
    entry = store.record_notification("lab", 1, {}, origin="poller").entry
    store.transition(entry.id, State.SNAPSHOT, expect=[State.NOTIFIED], snapshot={"x": 1})
    with pytest.raises(LookupError):
        store.transition(entry.id, State.FORWARDED, expect=[State.NOTIFIED])
    held = store.transition(entry.id, State.HELD, reason="pourquoi")
    assert held.snapshot == {"x": 1} and held.reason == "pourquoi"
    assert [(h["from_state"], h["to_state"]) for h in store.history(entry.id)] == [
        (None, "notified"), ("notified", "snapshot"), ("snapshot", "held")]


def test_changed_figures_after_tickets_were_sent_hold_the_session_saying_what_differs(store):
    summary = {"result": 500, "nb_tabs": 1, "payments": [{"method_id": 1, "total": 500}]}
    entry = store.record_notification("lab", 1, summary, origin="module").entry
    store.record_forward(entry.id, "session", 1, status="done", sink_id="s-1")
    store.record_forward(entry.id, "sale", 4, status="done", sink_id="sale-4")
    store.transition(entry.id, State.FORWARDED, mapped={"old": True})
    changed = {"result": 1100, "nb_tabs": 2, "payments": [{"method_id": 1, "total": 500}, {"method_id": 2, "total": 600}]}
    recorded = store.record_notification("lab", 1, changed, origin="module")
    assert recorded.outcome == "changed" and recorded.entry.state == State.HELD
    reason = recorded.entry.reason
    assert "5,00 € → 11,00 €" in reason and "tickets 1 → 2" in reason and "n° 2 0,00 € → 6,00 €" in reason
    assert "tickets 4)" in reason and "ledger release" in reason and "ne seront pas renvoyés" in reason
    assert recorded.entry.mapped is None  # released, it is re-read and re-mapped


def test_changed_figures_after_forwarding_nothing_send_it_back_to_reread(store):
    entry = store.record_notification("lab", 1, {"result": 0}, origin="module").entry
    store.record_forward(entry.id, "session", 1, status="done", detail="Aucune vente à transmettre")
    store.transition(entry.id, State.FORWARDED, snapshot={"result": 0})
    recorded = store.record_notification("lab", 1, {"result": 300}, origin="module")
    assert recorded.outcome == "changed" and recorded.entry.state == State.NOTIFIED


def test_a_failed_entry_whose_figures_changed_is_reread_not_forwarded_stale(store):
    entry = store.record_notification("lab", 1, {"result": 500}, origin="module").entry
    store.transition(entry.id, State.FAILED, snapshot={"result": 500}, mapped={"stale": True}, attempts=3,
                     next_attempt_at=utcnow() + timedelta(hours=2))
    recorded = store.record_notification("lab", 1, {"result": 1100}, origin="module")
    fresh = store.get("lab", 1)
    assert recorded.outcome == "changed" and fresh.state == State.NOTIFIED
    assert fresh.snapshot is None and fresh.mapped is None and fresh.attempts == 0 and fresh.next_attempt_at is None


def test_a_notification_after_the_poller_compares_with_what_was_reread(store):
    entry = store.record_notification("lab", 1, {"closed": "2026-11-24 01:18:22"}, origin="poller").entry
    store.transition(entry.id, State.MAPPED, snapshot={"result": 500, "nb_tabs": 1}, mapped={"m": 1})
    same = store.record_notification("lab", 1, {"result": 500, "nb_tabs": 1}, origin="module")
    assert same.outcome == "duplicate" and store.get("lab", 1).state == State.MAPPED
    differs = store.record_notification("lab", 1, {"result": 1100, "nb_tabs": 1}, origin="module")
    assert differs.outcome == "changed" and store.get("lab", 1).state == State.NOTIFIED


def test_a_held_entry_whose_figures_changed_waits_for_a_person_with_a_fresh_read(store):
    entry = store.record_notification("lab", 1, {"result": 500}, origin="module").entry
    store.transition(entry.id, State.HELD, reason="Mise en attente par un opérateur.", snapshot={"result": 500})
    store.record_notification("lab", 1, {"result": 700}, origin="module")
    fresh = store.get("lab", 1)
    assert fresh.state == State.HELD and fresh.reason == "Mise en attente par un opérateur." and fresh.snapshot is None


def test_changed_figures_before_forwarding_send_it_back_to_reread(store):
    entry = store.record_notification("lab", 1, {"result": 10}, origin="module").entry
    store.transition(entry.id, State.SNAPSHOT, snapshot={"old": True})
    recorded = store.record_notification("lab", 1, {"result": 11}, origin="module")
    assert recorded.entry.state == State.NOTIFIED and recorded.entry.snapshot is None


def test_claim_takes_due_entries_once(store):
    a = store.record_notification("lab", 1, {}, origin="module").entry
    b = store.record_notification("lab", 2, {}, origin="module").entry
    store.transition(b.id, State.FAILED, next_attempt_at=utcnow() + timedelta(hours=1))
    first = store.claim("w1")
    assert first.id == a.id
    assert store.claim("w2") is None  # a is claimed, b is not due
    assert store.claim("w2", now=utcnow() + timedelta(hours=2)).id == a.id  # a's lease expired
    store.release_claim(a.id, "w2")
    assert store.claim("w3").id == a.id


def test_claim_is_exclusive_across_threads(store):
    for i in range(1, 41):
        store.record_notification("lab", i, {}, origin="module")
    claimed: list[int] = []
    lock = threading.Lock()

    def worker(name):
        while (entry := store.claim(name)) is not None:
            with lock:
                claimed.append(entry.session_id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == list(range(1, 41))


def _claim_all(url: str, name: str, queue) -> None:
    ledger = Ledger(url)
    got = []
    while (entry := ledger.claim(name)) is not None:
        got.append(entry.session_id)
    queue.put(got)
    ledger.close()


def test_claim_is_exclusive_across_processes(store, tmp_path):
    for i in range(1, 61):
        store.record_notification("lab", i, {}, origin="module")
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    processes = [ctx.Process(target=_claim_all, args=(store.url, f"p{i}", queue)) for i in range(3)]
    for process in processes:
        process.start()
    results = [queue.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    assert sorted(s for r in results for s in r) == list(range(1, 61))


def test_counts_and_list_filters(store):
    store.record_notification("lab", 1, {}, origin="module")
    e = store.record_notification("other", 1, {}, origin="module").entry
    store.transition(e.id, State.HELD, reason="x")
    assert store.counts() == {("lab", "notified"): 1, ("other", "held"): 1}
    assert [x.source for x in store.list(states=[State.HELD])] == ["other"]
    assert [x.session_id for x in store.list(source="lab")] == [1]


def test_first_released_schema_upgrades_keeping_data(tmp_path):
    import shutil

    from tests.conftest import FIXTURES

    path = tmp_path / "old.sqlite"
    shutil.copy(FIXTURES / "ledger-v1.sqlite", path)
    ledger = Ledger(f"sqlite:///{path}")
    assert ledger.migrate() == (1, SCHEMA_VERSION)
    entry = ledger.get("lab", 1)
    assert entry.summary == {"result": 12450} and entry.mapped is None
    ledger.record_forward(entry.id, "sale", 3, status="sending", idempotency_key="k")
    ledger.record_forward(entry.id, "sale", 3, status="done", sink_id="uuid-1", idempotency_key="k")
    [(key, forward)] = ledger.forwards_of(entry.id).items()
    assert key == ("sale", 3) and forward.status == "done" and forward.sink_id == "uuid-1"
    ledger.close()


def test_listings_never_read_the_documents(store):
    """``ledger list`` and ``status`` read the columns they show, not megabytes of snapshots."""
    from sqlalchemy import event

    entry = store.record_notification("lab", 1, {}, origin="module").entry
    store.transition(entry.id, State.SNAPSHOT, snapshot={"tabs": ["x" * 100_000]})
    statements = []
    event.listen(store.engine, "before_cursor_execute", lambda conn, cur, sql, *a: statements.append(sql))
    [listed] = store.list(documents=False)
    store.overview()
    assert not [s for s in statements if "snapshot" in s or "mapped" in s]
    assert listed.id == entry.id and listed.state == State.SNAPSHOT and not listed.documents_loaded
    with pytest.raises(RuntimeError):
        listed.snapshot  # noqa: B018 - a listed entry refuses to pretend it has no document
    assert store.get_by_id(entry.id).snapshot == {"tabs": ["x" * 100_000]}


def test_next_due_is_the_earliest_retry_or_claim_expiry(store):
    assert store.next_due("lab") is None
    a = store.record_notification("lab", 1, {}, origin="module").entry
    now = utcnow()
    assert store.next_due("lab", now=now) == now  # due at once
    store.transition(a.id, State.FAILED, next_attempt_at=now + timedelta(minutes=5))
    assert store.next_due("lab", now=now) == now + timedelta(minutes=5)
    b = store.record_notification("lab", 2, {}, origin="module").entry
    assert store.claim("w", lease=timedelta(seconds=30), now=now).id == b.id
    assert store.next_due("lab", now=now) == now + timedelta(seconds=30)  # the claim may be abandoned
    assert store.next_due("other", now=now) is None


# -- answering Paheko before background work ----------------------------------------------------

def _timed_write(ledger: Ledger, *, background: bool) -> threading.Thread:
    """A write in another thread (a worker's if ``background``); its thread's ``.took`` is its duration."""

    def run():
        started = time.monotonic()
        with ledger.relaxed() if background else contextlib.nullcontext():
            ledger.record_notification("lab", 99, {}, origin="poll")
        thread.took = time.monotonic() - started

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.fixture
def receiver_and_worker(tmp_path):
    """Two ledgers on one file, as the receiver's and the worker's processes have (one open file each)."""
    url = f"sqlite:///{tmp_path / 'l.sqlite'}"
    receiver, worker = Ledger(url), Ledger(url)
    receiver.migrate()
    yield receiver, worker
    receiver.close()
    worker.close()


def test_a_background_write_waits_until_the_notification_is_answered(receiver_and_worker):
    receiver, worker = receiver_and_worker
    worker._gate.budget = 5.0
    with receiver.answering():
        write = _timed_write(worker, background=True)
        time.sleep(0.3)
        assert write.is_alive()
    write.join(5)
    assert 0.25 <= write.took < 1.5


def test_the_wait_for_answers_is_bounded(receiver_and_worker):
    receiver, worker = receiver_and_worker
    worker._gate.budget = 0.2
    with receiver.answering():
        write = _timed_write(worker, background=True)
        write.join(5)
        assert not write.is_alive()
    assert 0.15 <= write.took < 1.0


def test_writes_that_answer_paheko_and_writes_while_nobody_waits_do_not_wait(receiver_and_worker):
    receiver, worker = receiver_and_worker
    worker._gate.budget = 5.0
    quiet = _timed_write(worker, background=True)
    quiet.join(5)
    with worker.answering():
        answer = _timed_write(receiver, background=False)
        answer.join(5)
    assert quiet.took < 1.0 and answer.took < 1.0


def test_the_gate_stays_held_while_any_thread_still_answers(receiver_and_worker):
    receiver, worker = receiver_and_worker
    worker._gate.budget = 5.0
    first, second = receiver.answering(), receiver.answering()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    write = _timed_write(worker, background=True)
    time.sleep(0.2)
    assert write.is_alive()
    second.__exit__(None, None, None)
    write.join(5)
    assert not write.is_alive()


def test_a_gate_file_that_cannot_be_opened_costs_no_answer_and_says_so(receiver_and_worker, tmp_path, caplog):
    receiver, worker = receiver_and_worker
    for ledger in (receiver, worker):
        ledger._gate = type(ledger._gate)(str(tmp_path / "missing" / "l.sqlite.intake"))
    with caplog.at_level("WARNING", logger="receiver.ledger"), receiver.answering():
        receiver.record_notification("lab", 1, {}, origin="module")
        write = _timed_write(worker, background=True)
        write.join(5)
    assert receiver.get("lab", 1) is not None and write.took < 1.0
    assert [r.message for r in caplog.records if "intake gate" in r.message][:1] == [
        f"intake gate {tmp_path / 'missing' / 'l.sqlite.intake'} unusable (No such file or directory): "
        "the worker's writes no longer give way to answers"]
