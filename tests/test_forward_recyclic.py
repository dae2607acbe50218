"""The Recyclic sink over real HTTP against the stand-in: each sale exactly once, whatever fails on the way."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from receiver.config import Secret
from receiver.demo import PAHEKO_CATEGORIES
from receiver.dev.recyclic import CATEGORIES, MAIN_SITE, REPLAY_REGISTER, Fault
from receiver.dev.recyclic_store import ApiError
from receiver.dev.server import LocalServer
from receiver.outcomes import MustAct as DeliveryHeld, RetryLater as DeliveryRetry
from receiver.sinks.recyclic.profiles import marked_opening_time, opening_marker
from receiver.sinks.recyclic.sink import RecyclicSink
from receiver.sinks.recyclic.client import RecyclicClient
from receiver.sinks.recyclic.mapping.config import MappingSchema
from receiver.sinks.recyclic.mapping.mapper import map_session
from receiver.reread.snapshot import read_session
from tests.forward_support import (
    OPERATOR, PARIS_WINTER, START, Swappable, assert_exactly_once, mapped_session, new_entry, new_ledger, plug,
    deliver, released,
)
from tests.paheko_db import served

FIXTURE = Path(__file__).parent / "fixtures" / "paheko-caisse.sqlite"

_TARGET = Swappable()


@pytest.fixture(scope="module", autouse=True)
def _server():
    with LocalServer(_TARGET) as server:
        _TARGET.url = server.url
        yield


@pytest.fixture
def ledger(tmp_path):
    ledger = new_ledger(tmp_path)
    yield ledger
    ledger.close()


def sink_for(stand, sleeps: list | None = None, **config) -> RecyclicSink:
    sleep = sleeps.append if sleeps is not None else (lambda s: pytest.fail(f"unexpected sleep {s}"))
    cfg = stand.config(**config)
    return RecyclicSink(cfg, client=RecyclicClient(cfg, sleep=sleep))


def forwards(ledger, entry):
    return {key: (f.status, f.sink_id) for key, f in ledger.forwards_of(entry.id).items()}


# -- the happy path -------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["v2", "legacy"])
def test_session_sales_and_close_arrive_once_with_exact_amounts(ledger, profile):
    stand = plug(_TARGET, profile)
    mapped = mapped_session(profile)
    entry = new_entry(ledger)
    delivery = deliver(RecyclicSink(stand.config()), entry, mapped, ledger)

    assert delivery.sink == "recyclic" and delivery.closed and delivery.notes == ()
    assert_exactly_once(stand, mapped, delivery.reference)
    session = stand.app.store.sessions[delivery.reference]
    assert (session.operator_id, session.register_id, session.initial_amount) == (OPERATOR, mapped.opening.register_id, 5000)
    if profile == "v2":  # back-dated to Paheko's opening time (its second), sent with its offset
        assert session.deferred and session.opened_at.replace(microsecond=0) == mapped.opening.opened_at
        # the microseconds carry this Paheko session's marker (1..999999; 0 = sent by an older receiver)
        assert session.opened_at.microsecond == opening_marker(mapped.source, mapped.session_id) > 0
    else:
        assert not session.deferred and session.opened_at == START
    assert session.status == "closed" and session.actual_amount == mapped.closing.actual_cents
    assert session.variance_comment == mapped.closing.variance_comment
    line = stand.sales()[0].items[0]
    assert (line.unit_price, line.weight_g, line.total_price) == (333, 1350, 1000)  # 10,00 € / 3, rounded
    assert delivery.sales == {tab: sale_id for tab, sale_id in zip((100, 101, 102), session.sale_ids)}
    assert all(status == "done" for status, _ in forwards(ledger, entry).values())
    assert len(forwards(ledger, entry)) == 1 + 3 + 1 + (profile == "v2")  # v2: the outbox item rejected
    sale_posts = stand.log.count("POST", "/sales/")
    assert sale_posts == 3
    assert all(s.headers["idempotency-key"] == f"paheko-recyclic:lab:7:{100 + n}"
               for n, s in enumerate(s for s in stand.log.seen if s.path.endswith("/sales/")))

    again = deliver(RecyclicSink(stand.config()), entry, mapped, ledger)  # a new worker: nothing is sent again
    assert (again.reference, again.sales) == (delivery.reference, delivery.sales)
    assert [s.method for s in stand.log.seen[-1:]] == ["POST"] and stand.log.count("POST", "/sales/") == 3
    assert stand.log.count("POST", "/cash-sessions/") == 1


def test_the_opening_marker_is_stable_and_keeps_paheko_second():
    """The marker is how a session opened by this receiver is recognised later, by any version: it must
    never change (pinned values), never be 0 (left to unmarked openings), and never move the second."""
    assert [opening_marker("lab", 7), opening_marker("lab", 8), opening_marker("shop", 7)] == [313349, 577965, 503647]
    markers = {opening_marker("lab", n) for n in range(1, 5001)}
    assert min(markers) >= 1 and max(markers) <= 999_999 and len(markers) > 4980
    opened = datetime(2026, 3, 14, 13, 0, 59, tzinfo=PARIS_WINTER)
    sent = marked_opening_time(opened, "lab", 7)
    assert sent.replace(microsecond=0) == opened and sent.utcoffset() == opened.utcoffset()
    assert sent.isoformat() == "2026-03-14T13:00:59.313349+01:00"


def test_requests_are_identified_and_never_carry_context_headers(ledger):
    stand = plug(_TARGET, "v2")
    deliver(RecyclicSink(stand.config()), new_entry(ledger), mapped_session(), ledger)
    ids = [s.headers["x-request-id"] for s in stand.log.seen]
    assert len(set(ids)) == len(ids) == len(stand.log.seen)
    assert all(s.headers["user-agent"].startswith("paheko-recyclic/") for s in stand.log.seen)
    assert not any(h.startswith("x-recyclique-context") for s in stand.log.seen for h in s.headers)
    assert stand.log.count("POST", "/auth/login") == 1
    pins = [s.headers.get("x-step-up-pin") for s in stand.log.seen]
    assert pins.count("1234") == 1 and stand.log.seen[pins.index("1234")].path.endswith("/close")


def test_v2_leaves_the_session_open_when_closing_is_off(ledger):
    stand = plug(_TARGET, "v2")
    mapped = mapped_session(close=False)
    delivery = deliver(RecyclicSink(stand.config(pin=None)), new_entry(ledger), mapped, ledger)
    assert not delivery.closed and stand.app.store.sessions[delivery.reference].status == "open"
    assert_exactly_once(stand, mapped, delivery.reference)


def test_v2_close_rejects_recyclics_paheko_outbox_item_at_once(ledger):
    """Each v2 close queues an accounting item for Recyclic's own push to Paheko, which Paheko's caisse already
    booked: it is rejected right after the close, with a reason naming the caisse, once."""
    stand = plug(_TARGET, "v2")
    entry = new_entry(ledger)
    delivery = deliver(RecyclicSink(stand.config()), entry, mapped_session(), ledger)
    (item,) = stand.app.store.outbox.values()
    assert item.cash_session_id == delivery.reference
    assert (item.outbox_status, item.sync_state_core) == ("failed", "rejete")
    assert "Déjà comptabilisé dans Paheko par la caisse Paheko (source lab, session 7)" in item.rejection_reason
    assert forwards(ledger, entry)[("outbox", 7)] == ("done", item.id)
    rejects = stand.log.count("POST", f"/admin/paheko-outbox/items/{item.id}/reject")
    assert rejects == 1
    deliver(RecyclicSink(stand.config()), entry, mapped_session(), ledger)  # nothing sent again
    assert stand.log.count("POST", f"/admin/paheko-outbox/items/{item.id}/reject") == 1


def test_an_outbox_item_already_pushed_to_paheko_is_reported(ledger):
    """If Recyclic pushed the item before the rejection (a Paheko URL was configured), it cannot be undone:
    the admin is told to look for the double booking in Paheko; nothing is retried."""
    stand = plug(_TARGET, "v2")
    entry = new_entry(ledger)
    mapped = mapped_session()
    with pytest.raises(Crash):  # the worker dies right after recording the close
        deliver(RecyclicSink(stand.config()), entry, mapped, CrashingLedger(ledger, 10, True))
    (item,) = stand.app.store.outbox.values()
    stand.app.store.deliver_outbox_item(item.id)
    delivery = deliver(RecyclicSink(stand.config()), entry, mapped, ledger)
    assert delivery.closed and item.outbox_status == "delivered"
    assert any("doublon" in note and item.id in note for note in delivery.notes)
    assert forwards(ledger, entry)[("outbox", 7)][0] == "done"


def test_a_session_without_sales_opens_nothing(ledger):
    stand = plug(_TARGET, "v2")
    entry = new_entry(ledger)
    delivery = deliver(RecyclicSink(stand.config()), entry, mapped_session(tabs=0), ledger)
    assert delivery.reference is None and stand.sessions() == [] and stand.log.seen == []
    assert forwards(ledger, entry) == {("session", 7): ("done", None)}


# -- crashes at every step ------------------------------------------------------------------------------


class Crash(BaseException):
    """The worker process dies (not an Exception: nothing may catch it)."""


class CrashingLedger:
    """The ledger, except that the ``at``-th forward record dies just before (or after) being written."""

    def __init__(self, ledger, at: int, after: bool):
        self._ledger, self._at, self._after, self.calls = ledger, at, after, 0

    def record_forward(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self._at and not self._after:
            raise Crash
        self._ledger.record_forward(*args, **kwargs)
        if self.calls == self._at and self._after:
            raise Crash

    def __getattr__(self, name):
        return getattr(self._ledger, name)


def known_ids(ledger) -> set[str]:
    """Every Recyclic session id the ledger records."""
    return {f.sink_id for e in ledger.list(limit=10_000) for (kind, _), f in ledger.forwards_of(e.id).items()
            if kind == "session"}


@pytest.mark.parametrize("profile", ["v2", "legacy"])
def test_a_crash_between_any_two_steps_resumes_without_duplicates(ledger, profile):
    stand = plug(_TARGET, profile)
    steps = 2 + 3 * 2 + 2 + 2 * (profile == "v2")  # session, three sales, close, v2 outbox: sending + done each
    for at in range(1, steps + 1):
        for after in (False, True):
            session_id = at * 10 + after
            mapped = mapped_session(profile, session_id=session_id)
            entry = new_entry(ledger, session_id)
            crashing = CrashingLedger(ledger, at, after)
            stand.clock.advance(seconds=31)  # restarts take time: stay under the login rate limit
            with pytest.raises(Crash):
                deliver(RecyclicSink(stand.config()), entry, mapped, crashing)
            lost_opening = at == 2 and not after  # opened in Recyclic, never recorded
            delivery = deliver(RecyclicSink(stand.config()), entry, mapped, ledger)
            assert_exactly_once(stand, mapped, delivery.reference)
            assert stand.app.store.sessions[delivery.reference].status == "closed"
            assert all(status == "done" for status, _ in forwards(ledger, entry).values())
            # A lost opening is found again in Recyclic and adopted (both lines): no orphan, no second session.
            assert [s for s in stand.sessions() if s.status == "open"] == []
            assert [i for i in stand.app.store.outbox.values() if i.outbox_status == "pending"] == []
            assert len([s for s in stand.sessions() if s.opened_at and s.id not in known_ids(ledger)]) == 0
            assert bool(delivery.notes) == lost_opening
            assert [n["text"] for n in ledger.notes_of(entry.id)] == list(delivery.notes)


@pytest.mark.parametrize("profile", ["v2", "legacy"])
def test_lost_sale_answer_settled_after_idempotency_keys_expired(ledger, profile):
    stand = plug(_TARGET, profile)
    mapped = mapped_session(profile)
    entry = new_entry(ledger)
    stand.app.faults.script("POST /sales/", Fault.delay(0), Fault.lost_response())
    with pytest.raises(DeliveryRetry):
        deliver(RecyclicSink(stand.config()), entry, mapped, ledger)
    assert len(stand.sales()) == 2  # the second sale was stored, its answer lost
    assert forwards(ledger, entry)[("sale", 101)] == ("sending", None)

    stand.clock.advance(hours=25)  # idempotency keys and the access token are gone
    delivery = deliver(RecyclicSink(stand.config()), entry, mapped, ledger)
    assert_exactly_once(stand, mapped, delivery.reference)
    assert forwards(ledger, entry)[("sale", 101)] == ("done", delivery.sales[101])
    assert stand.log.count("GET", f"/cash-sessions/{delivery.reference}") == 1


def test_legacy_lost_answer_with_an_unknown_sale_in_the_session_is_held(ledger):
    stand = plug(_TARGET, "legacy")
    mapped = mapped_session("legacy")
    entry = new_entry(ledger)
    stand.app.faults.script("POST /sales/", Fault.lost_response())
    with pytest.raises(DeliveryRetry):
        deliver(RecyclicSink(stand.config()), entry, mapped, ledger)
    session_id = forwards(ledger, entry)[("session", 7)][1]
    other = replace(mapped_session("legacy", session_id=8).sales[0], items=mapped.sales[0].items[:1], total_cents=1000)
    stand.app.store.create_sale(stand.app.store.users[OPERATOR], {  # someone else's sale in that session
        "cash_session_id": session_id, "total_amount": 10.0, "payment_method": "cash",
        "items": [{"category": other.items[0].category_id, "quantity": 3, "weight": 1.35, "unit_price": 3.33,
                   "total_price": 10.0}]})
    with pytest.raises(DeliveryHeld) as held:
        deliver(RecyclicSink(stand.config()), entry, mapped, ledger)
    assert "non rapprochée" in held.value.reason
    assert len(stand.sales()) == 2


def test_lost_close_answer_is_settled_by_reading_the_session(ledger):
    stand = plug(_TARGET, "v2")
    mapped = mapped_session()
    entry = new_entry(ledger)
    stand.app.faults.script("POST /cash-sessions/*/close", Fault.lost_response())
    with pytest.raises(DeliveryRetry):
        deliver(RecyclicSink(stand.config()), entry, mapped, ledger)
    stand.clock.advance(hours=25)
    delivery = deliver(RecyclicSink(stand.config()), entry, mapped, ledger)
    assert delivery.closed and stand.log.count("POST", "/close") == 1
    assert forwards(ledger, entry)[("close", 7)] == ("done", delivery.reference)


# -- an unavailable or busy Recyclic --------------------------------------------------------------------


def test_recyclic_down_then_up(ledger):
    stand = plug(_TARGET, "v2")
    mapped = mapped_session()
    entry = new_entry(ledger)
    stand.app.faults.down()
    for _ in range(3):
        with pytest.raises(DeliveryRetry, match="503"):
            deliver(RecyclicSink(stand.config()), entry, mapped, ledger)
    stand.app.faults.up()
    stand.app.faults.script("POST /sales/", Fault.reset())
    with pytest.raises(DeliveryRetry, match="cannot reach"):
        deliver(RecyclicSink(stand.config()), entry, mapped, ledger)
    delivery = deliver(RecyclicSink(stand.config()), entry, mapped, ledger)
    assert_exactly_once(stand, mapped, delivery.reference)


def test_a_429_storm_is_waited_out_then_rescheduled(ledger):
    stand = plug(_TARGET, "v2")
    mapped = mapped_session()
    entry = new_entry(ledger)
    sleeps: list[float] = []
    stand.app.faults.script("POST /sales/", *[Fault.error(429, retry_after=2)] * 3)
    sink = sink_for(stand, sleeps)
    deliver(sink, entry, mapped, ledger)
    assert sleeps == [2, 2, 2]

    entry2 = new_entry(ledger, 8)
    mapped2 = mapped_session(session_id=8)
    stand.app.faults.script("POST /sales/", *[Fault.error(429, retry_after=2)] * 4)
    with pytest.raises(DeliveryRetry) as retry:
        deliver(sink, entry2, mapped2, ledger)
    assert retry.value.retry_after == 2 and sleeps == [2] * 6
    stand.app.faults.script("POST /sales/", Fault.error(429, retry_after=600))  # too long to wait in place
    with pytest.raises(DeliveryRetry) as retry:
        deliver(sink, entry2, mapped2, ledger)
    assert retry.value.retry_after == 600 and sleeps == [2] * 6
    delivery = deliver(sink, entry2, mapped2, ledger)
    assert_exactly_once(stand, mapped2, delivery.reference)


@pytest.mark.parametrize("profile", ["v2", "legacy"])
def test_expired_tokens_are_renewed(ledger, profile):
    stand = plug(_TARGET, profile, token_lifetime=timedelta(minutes=2))
    sink = RecyclicSink(stand.config())
    for n in range(3):
        delivery = deliver(sink, new_entry(ledger, n), mapped_session(profile, session_id=n), ledger)
        assert_exactly_once(stand, mapped_session(profile, session_id=n), delivery.reference)
        stand.clock.advance(minutes=3)
    renewals = stand.log.count("POST", "/auth/refresh") + stand.log.count("POST", "/auth/login")
    assert renewals == 3
    assert stand.log.count("POST", "/auth/login") == (1 if profile == "v2" else 3)
    stand.clock.advance(days=8)  # the refresh token is gone too: log in again
    deliver(sink, new_entry(ledger, 9), mapped_session(profile, session_id=9), ledger)
    assert stand.log.count("POST", "/auth/login") == (2 if profile == "v2" else 4)


def test_wrong_password_is_held_and_never_revealed(ledger):
    stand = plug(_TARGET, "v2")
    with pytest.raises(DeliveryHeld) as held:
        deliver(RecyclicSink(stand.config(password=Secret("not-the-password"))), 
            new_entry(ledger), mapped_session(), ledger)
    assert "paheko-bridge" in held.value.reason
    assert "not-the-password" not in str(held.value) + held.value.reason


def test_a_login_rate_limit_reschedules_for_a_minute(ledger):
    stand = plug(_TARGET, "v2")
    stand.app.faults.script("POST /auth/login", Fault.error(429))
    with pytest.raises(DeliveryRetry) as retry:
        deliver(RecyclicSink(stand.config()), new_entry(ledger), mapped_session(), ledger)
    assert retry.value.retry_after == 60


# -- refusals a person must handle ----------------------------------------------------------------------


def test_a_refused_pin_is_never_retried(ledger):
    stand = plug(_TARGET, "v2")
    wrong = dict(pin=Secret("9999"))
    first = new_entry(ledger, 1)
    with pytest.raises(DeliveryHeld) as held:
        deliver(RecyclicSink(stand.config(**wrong)), first, mapped_session(session_id=1), ledger)
    assert "code PIN" in held.value.reason
    assert "9999" not in held.value.reason + str(held.value)
    assert stand.log.count("POST", "/close") == 1
    for n in (2, 3):  # other sessions, other workers, restarts: the refused PIN is not sent again
        with pytest.raises(DeliveryHeld) as held:
            deliver(RecyclicSink(stand.config(**wrong)), new_entry(ledger, n), mapped_session(session_id=n), ledger)
        assert "a refusé ce code PIN" in held.value.reason
    with pytest.raises(DeliveryHeld) as held:
        deliver(RecyclicSink(stand.config(**wrong)), first, mapped_session(session_id=1), ledger)
    assert "a refusé ce code PIN" in held.value.reason
    assert stand.log.count("POST", "/close") == 1
    assert len(stand.sales()) == 9  # the sales themselves went through

    # A person fixes the PIN in the configuration: the next close goes through and clears the mark.
    deliver(RecyclicSink(stand.config()), new_entry(ledger, 2), mapped_session(session_id=2), ledger)
    assert stand.log.count("POST", "/close") == 2


def test_after_a_pin_refusal_a_released_session_tries_once_more(ledger):
    stand = plug(_TARGET, "v2")
    entry = new_entry(ledger, 1)
    sink = RecyclicSink(stand.config(pin=Secret("9999")))
    with pytest.raises(DeliveryHeld):
        deliver(sink, entry, mapped_session(session_id=1), ledger)
    stand.app.store.set_pin(next(u for u in stand.app.store.users.values() if u.username == "paheko-bridge"), "9999")
    delivery = deliver(sink, released(ledger, entry), mapped_session(session_id=1), ledger)
    assert delivery.closed and stand.log.count("POST", "/close") == 2


def test_a_locked_pin_is_held_without_retry(ledger):
    stand = plug(_TARGET, "v2")
    user = next(u for u in stand.app.store.users.values() if u.username == "paheko-bridge")
    for _ in range(5):  # someone else typed wrong PINs: the account is locked for 15 minutes
        with pytest.raises(ApiError):
            stand.app.store.check_step_up(user, "0000")
    with pytest.raises(DeliveryHeld) as held:
        deliver(sink_for(stand), new_entry(ledger), mapped_session(), ledger)
    assert "verrouillé" in held.value.reason
    assert stand.log.count("POST", "/close") == 1


def test_closing_without_a_configured_pin_is_held_before_sending(ledger):
    stand = plug(_TARGET, "v2")
    with pytest.raises(DeliveryHeld) as held:
        deliver(RecyclicSink(stand.config(pin=None)), new_entry(ledger), mapped_session(), ledger)
    assert "aucun code PIN" in held.value.reason
    assert stand.log.count("POST", "/close") == 0 and len(stand.sales()) == 3


def test_closing_without_a_paheko_close_mapping_is_held(ledger):
    stand = plug(_TARGET, "v2", paheko_close_mappings=[])
    entry = new_entry(ledger)
    with pytest.raises(DeliveryHeld) as held:
        deliver(RecyclicSink(stand.config()), entry, mapped_session(), ledger)
    assert "correspondance de clôture" in held.value.reason
    assert forwards(ledger, entry)[("close", 7)][0] == "sending" and len(stand.sales()) == 3


def test_an_idempotency_conflict_is_held(ledger):
    stand = plug(_TARGET, "v2")
    mapped = mapped_session()
    entry = new_entry(ledger)
    stand.app.faults.script("POST /sales/", Fault.delay(0), Fault.error(503))
    with pytest.raises(DeliveryRetry):
        deliver(RecyclicSink(stand.config()), entry, mapped, ledger)
    # The same key already served a different body (e.g. a ledger restored from an old backup).
    session_id = forwards(ledger, entry)[("session", 7)][1]
    http = httpx.Client(base_url=stand.url + "/v1")
    token = http.post("/auth/login", json={"username": "paheko-bridge", "password": "paheko-bridge-dev-password"})
    http.post("/sales/", headers={"Idempotency-Key": mapped.sales[1].idempotency_key,
                                  "Authorization": f"Bearer {token.json()['access_token']}"},
              json={"cash_session_id": session_id, "total_amount": 1.0, "note": "autre chose",
                    "items": [{"category": mapped.sales[1].items[0].category_id, "quantity": 1, "weight": 0.0,
                               "unit_price": 1.0, "total_price": 1.0, "notes": None}],
                    "payments": [{"payment_method": "cash", "amount": 1.0}]}).raise_for_status()
    with pytest.raises(DeliveryHeld) as held:
        deliver(RecyclicSink(stand.config()), entry, mapped, ledger)
    assert "ticket 101 avec un contenu différent" in held.value.reason


def test_bodies_that_would_break_recyclic_are_held_before_sending(ledger):
    stand = plug(_TARGET, "legacy")
    mapped = mapped_session("legacy")
    mixed = replace(mapped.sales[0], payments=mapped_session("v2").sales[1].payments)
    with pytest.raises(DeliveryHeld) as held:
        deliver(RecyclicSink(stand.config()), new_entry(ledger), replace(mapped, sales=(mixed,)), ledger)
    assert "un par vente" in held.value.reason
    long_item = replace(mapped.sales[0].items[0], category_id="x" * 51)
    with pytest.raises(DeliveryHeld) as held:
        deliver(RecyclicSink(stand.config()), new_entry(ledger, 8), replace(
            mapped, session_id=8, sales=(replace(mapped.sales[0], items=(long_item,)),)), ledger)
    assert "50 caractères" in held.value.reason
    assert stand.sales() == [] and stand.log.count("POST", "/sales/") == 0


def test_a_refused_opening_is_held_with_recyclics_reason(ledger):
    stand = plug(_TARGET, "v2")
    mapped = mapped_session()
    bad = replace(mapped, opening=replace(mapped.opening, opened_at=(START + timedelta(hours=1)).astimezone(PARIS_WINTER)))
    with pytest.raises(DeliveryHeld) as held:
        deliver(RecyclicSink(stand.config()), new_entry(ledger), bad, ledger)
    assert "La date d'ouverture ne peut pas être dans le futur" in held.value.reason


# -- the fixture's real sessions, mapped by the mapper ----------------------------------------------------


@pytest.mark.parametrize("profile", ["v2", "legacy"])
def test_the_fixture_sessions_arrive_exactly_as_mapped(ledger, profile):
    stand = plug(_TARGET, profile)
    stand.clock.advance(seconds=(datetime.now(UTC) - START).total_seconds())  # after the fixture's sessions
    by_name = {c.name: c.id for c in CATEGORIES}
    mapping = MappingSchema().load({
        "profile": profile, "close_session": True, "default_operator": OPERATOR,
        "locations": {"Boutique principale": {"site": MAIN_SITE.id, "register": REPLAY_REGISTER.id}},
        "categories": {name: by_name[ours] for name, ours in PAHEKO_CATEGORIES.items()},
        "methods": {"Espèces": "cash", "Monnaie locale": "check", "CB": "card", "Chèque": "check"},
        "policies": {"refunds": "skip", "mixed_methods": "skip"},
    })
    with served(FIXTURE) as (client, _app):
        snapshots = [read_session(client, n, ZoneInfo("Europe/Paris")) for n in (1, 2)]
    sink = RecyclicSink(stand.config())
    for snapshot in snapshots:
        mapped = map_session(snapshot, mapping)
        delivery = deliver(sink, new_entry(ledger, mapped.session_id), mapped, ledger)
        assert_exactly_once(stand, mapped, delivery.reference)
        session = stand.app.store.sessions[delivery.reference]
        assert session.status == "closed" and session.actual_amount == mapped.closing.actual_cents
        stored = [stand.app.store.sales[i] for i in session.sale_ids]
        assert sum(s.total_amount for s in stored) == mapped.reconciliation.items_cents.forwarded
        assert sum(line.weight_g for s in stored for line in s.items) == mapped.reconciliation.weight_grams.forwarded
