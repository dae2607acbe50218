"""The notification endpoint: auth, validation, idempotency, no redirects, secrets kept."""

from __future__ import annotations

import base64
import json
import logging
import threading

import httpx
import pytest

from receiver.intake.schema import NotificationSchema
from tests.conftest import SECOND_PASSWORD, SECOND_USER, WEBHOOK_PASSWORD, WEBHOOK_USER

URL = "/api/paheko/caisse/v1/session-closed"
GOOD = {
    "event": "session.closed",
    "session_id": 2,
    "closed": "2026-11-24 01:18:28",
    "result": 7290,
    "nb_tabs": 5,
    "payments": [{"method_id": 1, "method": "Espèces", "total": 1890}, {"method_id": 4, "method": "CB", "total": 4500}],
    "module_version": "0.1.0",
    "event_id": "2-1",
}


def basic(user: str = WEBHOOK_USER, password: str = WEBHOOK_PASSWORD) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def post(client, body, headers=None, url=URL, content_type="application/json"):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(url, data=data, headers={**basic(), **(headers or {})}, content_type=content_type)


# -- authentication -------------------------------------------------------------------------

def test_no_credentials_is_401_json(client):
    response = client.post(URL, json=GOOD)
    assert response.status_code == 401
    assert "Identifiants manquants" in response.get_json()["error"]


@pytest.mark.parametrize(
    "user,password",
    [(WEBHOOK_USER, "wrong"), ("nobody", WEBHOOK_PASSWORD), (WEBHOOK_USER, ""), (WEBHOOK_USER, WEBHOOK_PASSWORD + "x"),
     (SECOND_USER, WEBHOOK_PASSWORD)],
)
def test_wrong_credentials_are_403(client, ledger, user, password):
    response = post(client, GOOD, basic(user, password))
    assert response.status_code == 403
    assert "Identifiants refusés" in response.get_json()["error"]
    assert ledger.get("lab", 2) is None


def test_bearer_scheme_is_401(client):
    response = post(client, GOOD, {"Authorization": "Bearer abc"})
    assert response.status_code == 401


def test_credentials_pick_the_source(client, ledger):
    assert post(client, GOOD, basic(SECOND_USER, SECOND_PASSWORD)).status_code == 201
    assert ledger.get("other", 2) is not None and ledger.get("lab", 2) is None


def test_repeated_failures_are_throttled_per_address(client):
    for _ in range(10):
        assert post(client, GOOD, basic(WEBHOOK_USER, "bad")).status_code == 403
    throttled = post(client, GOOD)  # even the right password waits: the address is suspicious
    assert throttled.status_code == 429
    assert int(throttled.headers["Retry-After"]) >= 1
    other_address = client.post(URL, json=GOOD, headers=basic(), environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert other_address.status_code == 201


# -- validation -----------------------------------------------------------------------------

def test_valid_notification_is_stored_and_answered(client, ledger):
    response = post(client, GOOD)
    assert response.status_code == 201
    body = response.get_json()
    assert body["status"] == "accepted" and body["new"] is True and body["changed"] is False
    assert body["state"] == "notified" and body["state_label"] and body["message"].startswith("Session 2")
    entry = ledger.get("lab", 2)
    assert entry.summary == {
        "closed": "2026-11-24 01:18:28", "result": 7290, "nb_tabs": 5,
        "payments": [{"method_id": 1, "total": 1890}, {"method_id": 4, "total": 4500}],
    }
    [note] = ledger.notifications_of(entry.id)
    assert json.loads(note["raw_body"]) == GOOD and note["origin"] == "module" and note["event_id"] == "2-1"


def test_numeric_strings_from_brindille_literals_are_accepted(client, ledger):
    body = {**GOOD, "session_id": "7", "result": "-300", "nb_tabs": "1",
            "payments": [{"method_id": "1", "total": "-300"}]}
    assert post(client, body).status_code == 201
    assert ledger.get("lab", 7).summary["result"] == -300


def test_unknown_fields_are_ignored(client):
    assert post(client, {**GOOD, "flag": True, "future": {"x": 1}}).status_code == 201


def test_minimal_notification(client):
    assert post(client, {"event": "session.closed", "session_id": 3}).status_code == 201


INVALID = [
    ("event", None), ("event", "session.opened"), ("event", 3), ("event", "__missing__"),
    ("session_id", 0), ("session_id", -1), ("session_id", "-1"), ("session_id", 1.5), ("session_id", "1.5"),
    ("session_id", "abc"), ("session_id", True), ("session_id", None), ("session_id", "__missing__"),
    ("session_id", [2]), ("session_id", "99999999999999999999"),
    ("closed", "yesterday"), ("closed", 20261124), ("closed", "2026-13-01 00:00:00"),
    ("result", "12,50"), ("result", 12.5), ("result", {}), ("nb_tabs", -1), ("nb_tabs", "x"),
    ("payments", "x"), ("payments", [{"method_id": 1}]), ("payments", [{"total": 5}]),
    ("payments", [{"method_id": 0, "total": 5}]), ("payments", [{"method_id": 1, "total": "1.5"}]), ("payments", [3]),
    ("module_version", 12), ("module_version", "x" * 41), ("event_id", ["a"]), ("event_id", "x" * 81),
]


@pytest.mark.parametrize("field,value", INVALID, ids=[f"{f}={v!r}"[:40] for f, v in INVALID])
def test_invalid_field_is_400_naming_it_in_french(client, ledger, field, value):
    body = {k: v for k, v in GOOD.items() if k != field}
    if value != "__missing__":
        body[field] = value
    response = post(client, body)
    assert response.status_code == 400
    message = response.get_json()["error"]
    assert message.startswith("Notification refusée") and f"« {field}" in message
    assert ledger.list() == []


@pytest.mark.parametrize("raw,needle", [(b"", "vide"), (b"{not json", "JSON valide"), (b"[1,2]", "objet JSON"),
                                        (b"\xff\xfe", "JSON valide"), (b"null", "objet JSON")])
def test_bad_bodies_are_400(client, raw, needle):
    response = post(client, raw)
    assert response.status_code == 400 and needle in response.get_json()["error"]


def test_huge_body_is_413(client, ledger):
    response = post(client, {**GOOD, "padding": "x" * 70_000})
    assert response.status_code == 413 and response.is_json
    assert ledger.list() == []


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_wrong_content_type_is_415(client, content_type):
    response = post(client, GOOD, content_type=content_type)
    assert response.status_code == 415 and "application/json" in response.get_json()["error"]


def test_json_with_charset_is_accepted(client):
    assert post(client, GOOD, content_type="application/json; charset=utf-8").status_code == 201


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_405_json(client, method):
    response = client.open(URL, method=method, headers=basic())
    assert response.status_code == 405 and "POST" in response.headers["Allow"]
    assert "Méthode" in response.get_json()["error"]


def test_unknown_path_is_404_json(client):
    response = client.post("/api/paheko/caisse/v9/nothing", json=GOOD, headers=basic())
    assert response.status_code == 404 and response.is_json


# -- routes answer directly ------------------------------------------------------------------

ROUTES = [
    ("POST", "/api/paheko/caisse/v1/session-closed"), ("POST", "/api/paheko/caisse/session-closed"),
    ("GET", "/api/paheko/caisse/v1/status?sessions=1"), ("POST", "/api/paheko/caisse/v1/ping"),
    ("GET", "/api/paheko/caisse/v1/ping"), ("GET", "/healthz"), ("GET", "/readyz"),
]


@pytest.mark.parametrize("method,url", ROUTES)
@pytest.mark.parametrize("slash", ["", "/"])
def test_no_redirect_on_any_route_variant(live_receiver, method, url, slash):
    path, _, query = url.partition("?")
    target = f"{live_receiver.url}{path}{slash}" + (f"?{query}" if query else "")
    response = httpx.request(method, target, json=GOOD if method == "POST" else None, headers=basic(),
                             follow_redirects=False)
    assert not response.is_redirect and response.status_code < 300, (response.status_code, response.text)


def test_double_slash_does_not_redirect(live_receiver):
    response = httpx.post(live_receiver.url + "/api//paheko/caisse/v1/session-closed", json=GOOD, headers=basic())
    assert not response.is_redirect and response.status_code == 404


# -- idempotency ----------------------------------------------------------------------------

def test_same_session_twice_is_one_entry(client, ledger):
    first, second = post(client, GOOD), post(client, GOOD)
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.get_json()["new"] is False and second.get_json()["outcome"] == "duplicate"
    [entry] = ledger.list()
    assert [n["outcome"] for n in ledger.notifications_of(entry.id)] == ["new", "duplicate"]


def test_changed_figures_are_recorded_not_dropped(client, ledger):
    post(client, GOOD)
    response = post(client, {**GOOD, "result": 7000})
    assert response.get_json()["changed"] is True
    entry = ledger.get("lab", 2)
    assert entry.summary["result"] == 7000
    assert [n["outcome"] for n in ledger.notifications_of(entry.id)] == ["new", "changed"]


def test_sparse_notification_is_not_a_change(client, ledger):
    post(client, GOOD)
    response = post(client, {"event": "session.closed", "session_id": 2})
    assert response.get_json()["outcome"] == "duplicate"
    assert ledger.get("lab", 2).summary["result"] == 7290


def test_concurrent_duplicates_make_exactly_one_entry(live_receiver, ledger):
    barrier = threading.Barrier(16)
    statuses: list[int] = []

    def send():
        barrier.wait()
        statuses.append(httpx.post(live_receiver.url + URL, json=GOOD, headers=basic(), timeout=30).status_code)

    threads = [threading.Thread(target=send) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] * 15 + [201]
    [entry] = ledger.list()
    assert len(ledger.notifications_of(entry.id)) == 16
    assert [c["to_state"] for c in ledger.history(entry.id)] == ["notified"]


# -- status and ping -----------------------------------------------------------------------

def test_status_reports_each_session(client):
    post(client, GOOD)
    response = client.get("/api/paheko/caisse/v1/status?sessions=2,3", headers=basic())
    sessions = response.get_json()["sessions"]
    assert sessions["2"]["state"] == "notified" and sessions["3"]["state"] == "unknown"
    assert sessions["3"]["state_label"] == "inconnue du récepteur"


def test_status_is_per_source(client):
    post(client, GOOD)
    response = client.get("/api/paheko/caisse/v1/status?sessions=2", headers=basic(SECOND_USER, SECOND_PASSWORD))
    assert response.get_json()["sessions"]["2"]["state"] == "unknown"


def test_status_shows_reason_when_held(client, ledger):
    post(client, GOOD)
    from receiver.ledger import State

    ledger.transition(ledger.get("lab", 2).id, State.HELD, reason="Catégorie « Vêtements » non reliée.")
    sessions = client.post("/api/paheko/caisse/v1/status", json={"sessions": [2]}, headers=basic()).get_json()["sessions"]
    view = {k: sessions["2"][k] for k in ("state", "state_label", "reason", "tone", "label")}
    assert view == {"state": "held", "state_label": "bloquée : une action est nécessaire",
                    "reason": "Catégorie « Vêtements » non reliée.", "tone": "check", "label": "à vérifier"}
    assert sessions["2"]["admin_reason"].startswith("Catégorie « Vêtements » non reliée.")


def test_status_carries_the_sinks_notes(client, ledger):
    post(client, GOOD)
    entry = ledger.get("lab", 2)
    ledger.add_note(entry.id, "Session Recyclic vide en trop abc supprimée.")
    sessions = client.get("/api/paheko/caisse/v1/status?sessions=2,3", headers=basic()).get_json()["sessions"]
    assert sessions["2"]["notes"] == ["Session Recyclic vide en trop abc supprimée."]
    assert sessions["3"]["notes"] == [] and sessions["3"]["state"] == "unknown"


@pytest.mark.parametrize("query", ["", "sessions=", "sessions=a,b", "sessions=0", "sessions=" + ",".join(["1"] * 201)])
def test_status_rejects_bad_lists(client, query):
    response = client.get(f"/api/paheko/caisse/v1/status?{query}", headers=basic())
    assert response.status_code == 400 and "sessions" in response.get_json()["error"]


def test_ping_names_the_source(client):
    body = client.post("/api/paheko/caisse/v1/ping", json=[], headers=basic()).get_json()
    assert body["status"] == "ok" and body["source"] == "lab" and "Connexion réussie" in body["message"]


def test_health_and_readiness(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz").get_json()
    assert ready["status"] == "ready" and ready["sources"] == ["lab", "other"]


# -- secrets -------------------------------------------------------------------------------

def test_secrets_never_appear_in_answers_or_logs(client, caplog, app, config):
    caplog.set_level(logging.DEBUG)
    answers = [
        post(client, GOOD), post(client, GOOD, basic(WEBHOOK_USER, "bad")), post(client, {"event": 1}),
        client.get("/readyz"), client.post(URL, data="x", headers=basic(), content_type="text/plain"),
    ]
    secrets = [WEBHOOK_PASSWORD * 3, "PahekoApiSecret42", "OtherApiSecret42", SECOND_PASSWORD]
    texts = [a.get_data(as_text=True) for a in answers] + [caplog.text, repr(config), str(config)]
    for secret in secrets:
        assert not any(secret in text for text in texts), secret


def test_schema_documents_every_field():
    assert set(NotificationSchema().fields) == {
        "event", "session_id", "closed", "result", "nb_tabs", "payments", "module_version", "event_id"}


def test_previous_credentials_work_during_rotation(tmp_path):
    from receiver.app import create_app
    from receiver.config import parse_config
    from tests.conftest import config_document

    document = config_document(tmp_path)
    document["sources"]["lab"]["webhook"]["previous"] = [{"user": "oldmodule", "password": "OldPassword1"}]
    app = create_app(parse_config(document))
    client = app.test_client()
    assert post(client, GOOD, basic("oldmodule", "OldPassword1")).status_code == 201
    assert post(client, {**GOOD, "session_id": 3}).status_code == 201
    assert post(client, GOOD, basic("oldmodule", WEBHOOK_PASSWORD)).status_code == 403
    ledger = app.extensions["paheko_recyclic"].ledger
    assert {e.source for e in ledger.list()} == {"lab"}
    ledger.close()


def test_a_notification_is_answered_with_background_writes_held_back(client, ledger, monkeypatch):
    """While the route records, the worker's writes (in another process) wait for the answer."""
    import fcntl
    import os

    record, seen = ledger.record_notification, []

    def probing(*args, **kwargs):
        fd = os.open(ledger._gate.path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            seen.append("free")
        except BlockingIOError:
            seen.append("held")
        finally:
            os.close(fd)
        return record(*args, **kwargs)

    monkeypatch.setattr(ledger, "record_notification", probing)
    assert post(client, GOOD).status_code == 201
    fd = os.open(ledger._gate.path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again once answered
    os.close(fd)
    assert seen == ["held"]
