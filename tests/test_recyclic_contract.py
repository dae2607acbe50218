"""Contract: the Recyclic stand-in answers what the real v2 backend answered (data in tests/fixtures/recyclic-v2/).

``probe.json``: the 22 requests sent to a real Recyclic 1.4.4 and its answers, replayed here in the same order
against the stand-in; each answer must match (status, content type, envelope code, detail — or the summary
the capture kept). ``observed.json``: one entry per row of the facts table "Stand-in vs the real v2 backend",
each checked by one test below. Changing the stand-in's behaviour without new observations fails here.
"""

from __future__ import annotations

import http.client
import json
import re
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from receiver.dev.recyclic import (
    CATEGORIES, DEFAULT_USERS, LIVE_REGISTER, MACHINE_USER, MAIN_SITE, REPLAY_REGISTER,
)
from tests.test_dev_recyclic import Stand, _server, item, serve  # noqa: F401  (the module's server)

FIXTURES = Path(__file__).parent / "fixtures" / "recyclic-v2"
PROBE = json.loads((FIXTURES / "probe.json").read_text(encoding="utf-8"))
OBSERVED = json.loads((FIXTURES / "observed.json").read_text(encoding="utf-8"))["rows"]
#: probes whose "detail" is a summary written by the capture, not the answer's detail (see probe.json "about")
SUMMARIES = {"P1", "P4", "P8b", "P12", "P16"}
OPERATOR = DEFAULT_USERS[1].id
CATEGORY = next(c.id for c in CATEGORIES if c.name == "Vêtements adultes")


def _fill(value, names: dict[str, str]):
    if isinstance(value, str):
        return re.sub(r"\{(\w+)\}", lambda m: names.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def replayed():
    """Every probe sent, in order, to one v2 stand-in: ``{probe id: (probe, response)}``."""
    with serve("v2") as stand:
        stand.login()
        now = stand.clock()
        names = {
            "user": MACHINE_USER.username, "operator": OPERATOR, "site": MAIN_SITE.id,
            "deferred_register": REPLAY_REGISTER.id, "category": CATEGORY, "pin": MACHINE_USER.pin,
            "random_uuid": str(uuid.uuid4()), "key": "probe-" + uuid.uuid4().hex,
            "3_days_ago_naive": (now - timedelta(days=3)).replace(tzinfo=None, microsecond=0).isoformat(),
            "2_hours_ahead_with_offset": (now + timedelta(hours=2)).isoformat(),
        }
        answers: dict[str, tuple[dict, httpx.Response, dict]] = {}
        for probe in PROBE["probes"]:
            request = _fill(probe["request"], names)
            path = request["path"].removeprefix("/v1")
            response = stand.http.request(request["method"], path, json=request["json"], headers=request["headers"])
            answers[probe["id"]] = (probe, response, dict(names))
            if probe["id"] == "P1":
                names["session"] = response.json()["id"]
            if probe["id"] == "P10a":
                names["empty_session"] = response.json()["id"]
        yield answers


@pytest.mark.parametrize("probe_id", [p["id"] for p in PROBE["probes"]])
def test_probe_answer_matches_the_real_backend(replayed, probe_id):
    probe, response, names = replayed[probe_id]
    real = probe["real"]
    assert response.status_code == real["status"], response.text
    assert response.headers["content-type"].startswith(real["content_type"])
    body = response.json() if real["content_type"] == "application/json" else response.text
    if real["code"] is not None:
        assert body["code"] == real["code"]
    if probe_id in SUMMARIES:
        SUMMARY_CHECKS[probe_id](real["detail"], body, names, replayed)
    elif real["detail"] is not None:
        detail = body if isinstance(body, str) else body["detail"]
        text = detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False)
        assert text.startswith(real["detail"])  # truncated captures end where the capture cut them


def _p1(summary, body, names, _):
    sent, answered = re.fullmatch(r"opened_at sent (\S+) → (\S+)", summary).groups()
    assert names["3_days_ago_naive"] + "Z" == body["opened_at"]  # a naive opened_at is taken as UTC
    assert answered == sent + "Z"


def _p4(summary, body, _names, _):
    assert [[p["payment_method"], p["amount"]] for p in body["payments"]] == json.loads(summary.split("=", 1)[1])


def _p8b(summary, body, _names, replayed):
    same_id, identical, only_first = re.fullmatch(
        r"same id: (\w+); identical body: (\w+); keys only in first: (\[.*\])", summary).groups()
    first = replayed["P8a"][1].json()
    assert (first["id"] == body["id"]) is (same_id == "True")
    assert (first == body) is (identical == "True")
    assert sorted(set(first) - set(body)) == json.loads(only_first.replace("'", '"'))


def _p12(summary, body, _names, _):
    status, variance, n_keys, report = re.fullmatch(
        r"status=(\w+) variance=(\S+) n_keys=(\d+) report_url=(\w+)", summary).groups()
    assert body["status"] == status and body["variance"] == float(variance) and len(body) == int(n_keys)
    assert bool(body["report_download_url"]) is (report == "True")


def _p16(summary, body, _names, _):
    n_sales, keys = re.fullmatch(r"n_sales=(\d+) sale keys=(\[.*\])", summary).groups()
    assert len(body["sales"]) == int(n_sales)
    assert all(sorted(sale) == json.loads(keys.replace("'", '"')) for sale in body["sales"])


SUMMARY_CHECKS = {"P1": _p1, "P4": _p4, "P8b": _p8b, "P12": _p12, "P16": _p16}


def test_every_probe_of_the_capture_is_replayed():
    # 22 cases; P8 and P10 are two requests each (first and replay; the empty session opened, then closed)
    assert len(PROBE["probes"]) == 24 and set(SUMMARY_CHECKS) == SUMMARIES


# -- one test per row of the facts table --------------------------------------------------------------


@pytest.fixture
def v2():
    with serve("v2") as stand:
        stand.login()
        yield stand


def row_free_ticket(v2: Stand, row):
    session = v2.open()
    for quantity in (1, 0):
        free = v2.sale(session, 0.0, items=[item(0.0, quantity=quantity)], payments=[])
        assert free.status_code == row["status"] and len(free.json()["payments"]) == row["payment_rows"]


def row_no_payments_field(v2, row):
    session = v2.open()
    answer = v2.http.post("/sales/", json={"cash_session_id": session, "items": [item(7.5)], "total_amount": 7.5})
    assert answer.status_code == row["status"]
    total = answer.json()["total_amount"]
    expected = [[code, total if amount == "total" else amount] for code, amount in row["payments"]]
    assert [[p["payment_method"], p["amount"]] for p in answer.json()["payments"]] == expected


def row_sale_into_closed_session(v2, row):
    session = v2.open()
    v2.sale(session)
    v2.close(session, 26.0)
    late = v2.sale(session)
    assert (late.status_code, late.json()["code"]) == (row["status"], row["code"])
    assert isinstance(late.json()["detail"], str)  # a string detail, not a validation list


def row_unknown_operator(v2, row):
    answer = v2.http.post("/cash-sessions/", json={"operator_id": str(uuid.uuid4()), "site_id": MAIN_SITE.id,
                                                   "initial_amount": 0, "opened_at": "2026-03-10T10:00:00Z"})
    assert (answer.status_code, answer.json()["code"], answer.json()["detail"]) == (
        row["status"], row["code"], row["detail"])


def row_french_details(v2, row):
    session = v2.open()
    v2.sale(session)
    v2.close(session, 26.0)
    wrong = v2.http.post("/auth/login", json={"username": MACHINE_USER.username, "password": "nope"})
    assert [v2.close(session, 26.0).json()["detail"], wrong.json()["detail"]] == row["examples"]


def row_idempotent_replay(v2, row):
    session = v2.open()
    first, replay = (v2.sale(session, headers={"Idempotency-Key": "k"}).json() for _ in range(2))
    assert (first["id"] == replay["id"]) is row["same_id"]
    assert sorted(set(first) - set(replay)) == row["keys_only_in_first"]


def row_session_read_back(v2, row):
    session = v2.open()
    v2.sale(session, note="Paheko lab session 1 ticket 1")
    closed = v2.close(session, 26.0).json()
    assert len(closed) == row["close_answer_keys"]
    assert closed["report_download_url"].startswith(row["report_download_url_prefix"] + "/")
    (sale,) = v2.http.get(f"/cash-sessions/{session}").json()["sales"]
    assert sorted(sale) == row["sale_keys"] and "cash_session_id" not in sale


def row_close_checks_order(_v2, row):
    assert row["order"] == ["pin", "empty", "variance", "mapping"]  # as the facts give it (see lab_close_order)
    with serve("v2", paheko_close_mappings=[]) as stand:
        stand.login()
        empty = stand.open(opened_at="2026-03-10T10:00:00Z", initial_amount=0)  # counted at its float
        assert stand.close(empty, 0.0, pin="").json()["code"] == "STEP_UP_PIN_REQUIRED"  # 1. PIN
        deleted = stand.close(empty, 0.0)  # 2. empty: deleted, although no close mapping exists
        assert deleted.status_code == row["empty_session_answer"]["status"]
        assert deleted.json()["deleted"] is row["empty_session_answer"]["deleted"]
        session = stand.open()
        stand.sale(session)
        assert stand.close(session, 1.0).status_code == 400  # 3. variance comment, before the mapping
        assert stand.close(session, 1.0, "compté").json()["code"] == "PAHEKO_SYNC_FINAL_ACTION_REFUSED"  # 4.


def row_http_405(v2, row):
    answer = v2.http.get("/sales/")
    assert (answer.status_code, answer.json()["code"], answer.json()["detail"]) == (
        row["status"], row["code"], row["detail"])


def row_weight_null(v2, row):
    answer = v2.sale(v2.open(), items=[item(weight=None)])
    assert answer.status_code == row["status"] and answer.json()["detail"][0]["type"] == row["type"]


def row_pin_failures(v2, row):
    session = v2.open()
    v2.sale(session)
    for _ in range(row["failures_to_lock"] - 1):
        assert v2.close(session, 26.0, pin="0000").json()["code"] == "STEP_UP_PIN_INVALID"
    v2.clock.advance(seconds=row["window_seconds"] + 1)  # the window is over: the count starts again
    for _ in range(row["failures_to_lock"] - 1):
        v2.close(session, 26.0, pin="0000")
    assert v2.close(session, 26.0).status_code == 200  # not locked
    other = v2.open(opened_at="2026-03-10T10:00:00Z")
    v2.sale(other)
    for _ in range(row["failures_to_lock"]):
        v2.close(other, 26.0, pin="0000")
    locked = v2.close(other, 26.0)
    assert (locked.status_code, locked.json()["code"]) == (row["locked"]["status"], row["locked"]["code"])
    v2.clock.advance(minutes=row["lock_minutes"] - 1)
    assert v2.close(other, 26.0).status_code == row["locked"]["status"]
    v2.clock.advance(minutes=1, seconds=1)
    v2.login()
    assert v2.close(other, 26.0).status_code == 200


def row_idempotency_store(v2, row):
    session = v2.open()
    key = {"Idempotency-Key": "tab-1"}
    first = v2.sale(session, headers=key).json()["id"]
    v2.clock.advance(hours=row["kept_hours"] - 1)
    v2.login()
    assert v2.sale(session, headers=key).json()["id"] == first
    assert set(row["lost_on"]) == {"restart", "flush", "eviction"}
    assert httpx.post(v2.root + "/_stand-in/redis/flush").status_code == 200  # all three lose the keys
    assert v2.sale(session, headers=key).json()["id"] != first


def row_close_side_effects(v2, row):
    session = v2.open()
    v2.sale(session)
    closed = v2.close(session, 26.0).json()
    assert bool(closed["report_download_url"]) is row["report"]
    assert bool(closed["accounting_close_snapshot"]) is row["accounting_snapshot"]
    items = v2.http.get("/admin/paheko-outbox/items", params={"cash_session_id": session}).json()["data"]
    assert [{k: i[k] for k in row["outbox_item"]} for i in items] == [row["outbox_item"]]
    rejected = v2.http.post(f"/admin/paheko-outbox/items/{items[0]['id']}/reject", json={"reason": "caisse Paheko"})
    assert {k: rejected.json()[k] for k in row["after_reject"]} == row["after_reject"]


def row_float_read_back(v2, row):
    session = v2.open(initial_amount=50.0)
    for amount in (37.95, 0.89, 17.05, 34.31):
        v2.sale(session, amount, items=[item(amount, weight=0.0)])
    closed = v2.close(session, 95.2, "écart").json()
    assert closed["variance"] == row["variance"]  # 95.2 − (50 + 37.95 + 0.89 + 17.05 + 34.31) in floats
    weighed = v2.open(opened_at="2026-03-10T10:00:00Z")
    v2.sale(weighed, 2.0, items=[item(1.0, weight=70.7), item(1.0, weight=0.15)])
    assert v2.http.get(f"/cash-sessions/{weighed}").json()["total_weight_out"] == row["total_weight_out"]


def row_session_list(v2, row):
    session = v2.open()
    v2.sale(session)
    listed = v2.http.get(row["path"], params={row["filter"]: "open", "operator_id": OPERATOR}).json()["data"]
    assert [(s["id"], s[row["count_key"]]) for s in listed] == [(session, 1)]


def row_shop_data(v2, row):
    names = {c["name"] for c in v2.http.get("/categories/").json()}
    assert set(row["near_names"]) <= names
    live = [r for r in v2.http.get("/cash-registers/").json()
            if v2.http.get(f"/cash-sessions/status/{r['id']}").json()["is_active"]]
    assert [r["id"] for r in live] == [LIVE_REGISTER.id] and len(live) == row["registers_in_live_use"]


def row_same_on_both(v2, row):
    for _ in range(9):  # the fixture logged in once
        v2.http.post("/auth/login", json={"username": MACHINE_USER.username, "password": "nope"})
    limited = v2.http.post("/auth/login", json={"username": MACHINE_USER.username, "password": MACHINE_USER.password})
    assert limited.status_code == 429 and limited.json() == row["login_429_body"]


def row_live_opening_blocked(v2, row):
    v2.open(register_id=REPLAY_REGISTER.id)
    same_operator = v2.http.post("/cash-sessions/", json={"operator_id": OPERATOR, "site_id": MAIN_SITE.id,
                                                          "initial_amount": 0})
    same_register = v2.http.post("/cash-sessions/", json={"operator_id": MACHINE_USER.id, "site_id": MAIN_SITE.id,
                                                           "register_id": LIVE_REGISTER.id, "initial_amount": 0})
    assert same_operator.json()["detail"] == row["operator"] and same_register.json()["detail"] == row["register"]




# -- rows observed on the lab (a second real v2), 2 December 2026 ----------------------------------------


def row_lab_payment_rows(v2, row):
    session = v2.open()
    total = sum(amount for _, amount in row["sent"])
    sale = v2.sale(session, total, payments=[{"payment_method": c, "amount": a} for c, a in row["sent"]]).json()
    assert [{k: p[k] for k in ("payment_method", "payment_method_code")} for p in sale["payments"]] == row["read_back"]
    assert sale["payment_method"] == row["sale_payment_method"]
    for code in row["unchanged"]:
        paid = v2.sale(session, 1.0, method=code).json()["payments"][0]
        assert paid["payment_method"] == paid["payment_method_code"] == code


def row_lab_payment_method_options(v2, row):
    assert v2.http.get("/sales/payment-method-options").json() == row["options"]


def row_lab_session_list(v2, row):
    empty = v2.open(opened_at="2026-03-10T10:00:00Z")
    listed = [s["id"] for s in v2.http.get("/cash-sessions/", params={"status": "open"}).json()["data"]]
    assert (empty in listed) is row["include_empty_default"]
    with_empty = v2.http.get("/cash-sessions/", params={"status": "open", "include_empty": "true"}).json()["data"]
    by_register = v2.http.get("/cash-sessions/", params={"status": "open", "include_empty": "true",
                                                         "register_id": LIVE_REGISTER.id}).json()["data"]
    assert row["register_id_filter"] == "ignored" and by_register == with_empty and empty in [s["id"] for s in by_register]
    assert v2.http.get("/cash-sessions/", params={"limit": row["limit_max"]}).status_code == 200
    assert v2.http.get("/cash-sessions/", params={"limit": row["limit_max"] + 1}).status_code == 422


def row_lab_session_read_back(v2, row):
    session = v2.open()
    v2.sale(session)
    v2.clock.advance(minutes=5)
    v2.close(session, 26.0)
    detail = v2.http.get(f"/cash-sessions/{session}").json()
    assert len(detail) == row["detail_keys"] and set(row["added_keys"]) <= set(detail)
    assert all(detail[key] is None for key in row["null_on_read_back"])
    assert detail["register_options"] == row["register_options"]
    sale = v2.http.get(f"/sales/{detail['sales'][0]['id']}").json()
    assert row["payment_created_at"] == "server clock" and sale["payments"][0]["created_at"] == sale["created_at"]
    dated = v2.open(opened_at="2026-03-01T10:00:00Z")
    back_dated = v2.sale(dated).json()  # sale dated back to the opening; its payment row is written now
    assert back_dated["created_at"] == "2026-03-01T10:00:00Z"
    assert back_dated["payments"][0]["created_at"] == "2026-03-14T15:05:00Z"


def row_lab_accounting_snapshot(v2, row):
    session = v2.open()
    v2.sale(session)
    snapshot = v2.close(session, 26.0).json()["accounting_close_snapshot"]
    assert snapshot["schema_version"] == row["schema_version"] and sorted(snapshot) == row["keys"]
    assert sorted(snapshot["closing"]) == row["closing_keys"]


def row_lab_category_too_long(v2, row):
    session = v2.open()
    url = httpx.URL(str(v2.http.base_url))
    body = json.dumps({"cash_session_id": session, "items": [item(category="x" * 51)], "total_amount": 6.0,
                       "payments": [{"payment_method": "cash", "amount": 6.0}]})
    connection = http.client.HTTPConnection(url.host, url.port, timeout=5)
    connection.request("POST", url.path + "sales/", body, {"Content-Type": "application/json",
                                                           "Authorization": v2.http.headers["Authorization"]})
    crash = connection.getresponse()
    assert crash.status == row["status"] and crash.read() == b"Internal Server Error"
    assert row["connection"] == "reset after the answer"
    assert crash.getheader("Connection") == "close" and connection.sock is None  # no kept-alive connection left
    connection.close()
    assert v2.app.store.new_sales() == {}


def row_lab_close_order(_v2, row):
    """The facts' order holds for sessions counted at their float; an empty session counted otherwise needs a
    variance comment first (observed on the lab)."""
    assert row["order"] == ["pin", "variance", "empty", "mapping"]
    with serve("v2", paheko_close_mappings=[]) as stand:
        stand.login()
        empty = stand.open(opened_at="2026-03-10T10:00:00Z", initial_amount=row["empty_float"])
        refused = stand.close(empty, row["counted"])
        assert (refused.status_code, refused.json()["detail"]) == (row["refused"]["status"], row["refused"]["detail"])
        assert stand.close(empty, row["empty_float"]).json()["deleted"] is True


def row_lab_variance_tolerance(v2, row):
    session = v2.open(initial_amount=10.0)
    v2.sale(session, 2.0, items=[item(2.0)])
    closed = v2.close(session, row["counted"])
    assert closed.status_code == row["status"] and closed.json()["variance"] == row["variance"]


def row_lab_error_envelope(v2, row):
    answer = v2.http.get(f"/cash-sessions/{uuid.uuid4()}")
    assert list(answer.json()) == row["keys"]


def row_lab_opened_at_microseconds(v2, row):
    """What makes two openings of the same second tell apart (the forwarder's opening marker)."""
    v2.clock.advance(days=260)  # the observed dates are in the stand-in's future otherwise
    v2.login()  # the token expired meanwhile
    ids = [v2.open(opened_at=sent, initial_amount=0) for sent in row["sent"]]
    assert [v2.http.get(f"/cash-sessions/{i}").json()["opened_at"] for i in ids] == row["read_back"]

    def listed(**window):
        data = v2.http.get("/cash-sessions/", params={"include_empty": "true", "limit": 100, **window}).json()
        return [s["opened_at"] for s in data["data"] if s["id"] in ids]

    assert listed() == row["listed_order"]
    second = row["read_back"][3]
    assert listed(date_from=second, date_to=second) == row["date_from_to_the_whole_second"]


ROW_CHECKS = {name[4:]: check for name, check in dict(globals()).items() if name.startswith("row_")}


@pytest.mark.parametrize("row", sorted(OBSERVED))
def test_stand_in_matches_the_observed_row(v2, row):
    ROW_CHECKS[row](v2, OBSERVED[row])


def test_every_observed_row_has_a_check_and_every_check_a_row():
    assert set(ROW_CHECKS) == set(OBSERVED)
    covered = {p for row in OBSERVED.values() for p in row.get("probes", ())}
    assert covered <= {p["id"] for p in PROBE["probes"]}
