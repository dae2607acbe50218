"""Operations: /metrics (content, protection) and JSON logs that never carry a secret."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from receiver.app import create_app
from receiver.config import Secret, parse_config
from receiver.ledger import tables as t
from receiver.ledger.store import utcnow
from receiver.logs import JsonFormatter, configure_logging, secrets_of
from receiver.services import Metrics
from tests.conftest import SECOND_PASSWORD, SECOND_USER, config_document
from tests.test_intake import GOOD, basic, post

TOKEN = "MetricsToken0123456789"


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a Prometheus text page, keyed by (name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(client, **kwargs) -> dict:
    response = client.get("/metrics", **kwargs)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain")
    return samples(response.get_data(as_text=True))


@pytest.fixture
def token_app(tmp_path):
    config = parse_config(config_document(tmp_path, f'metrics_token = "{TOKEN}"'), tmp_path / "config.toml")
    app = create_app(config)
    yield app
    app.extensions["paheko_recyclic"].ledger.close()


# -- /metrics ---------------------------------------------------------------------------------

def test_metrics_count_notifications_by_outcome_and_auth_failures(client):
    assert post(client, GOOD).status_code == 201
    assert post(client, GOOD).status_code == 200
    assert post(client, {**GOOD, "result": 1}).status_code == 200
    assert post(client, GOOD, basic(password="wrong")).status_code == 403
    assert client.post("/api/paheko/caisse/v1/session-closed", json=GOOD).status_code == 401
    assert post(client, "{", content_type="application/json").status_code == 400
    page = scrape(client)
    for outcome in ("new", "duplicate", "changed", "rejected"):
        assert page[("paheko_recyclic_notifications_total", (("outcome", outcome), ("source", "lab")))] == 1
    assert page[("paheko_recyclic_auth_failures_total", (("status", "403"),))] == 1
    assert page[("paheko_recyclic_auth_failures_total", (("status", "401"),))] == 1


def test_metrics_queue_depth_and_oldest_pending_per_source(client, ledger):
    post(client, GOOD)
    post(client, {**GOOD, "session_id": 3, "event_id": "3-1"})
    with ledger.transaction() as conn:  # session 2 arrived an hour ago
        conn.execute(t.entries.update().where(t.entries.c.session_id == 2)
                     .values(created_at=utcnow() - timedelta(hours=1)))
    page = scrape(client)
    assert page[("paheko_recyclic_ledger_up", ())] == 1
    assert page[("paheko_recyclic_ledger_entries", (("source", "lab"), ("state", "notified")))] == 2
    assert page[("paheko_recyclic_ledger_entries", (("source", "lab"), ("state", "forwarded")))] == 0
    # a configured source with nothing yet still has its series (alerts need them)
    assert page[("paheko_recyclic_ledger_entries", (("source", "other"), ("state", "notified")))] == 0
    assert page[("paheko_recyclic_oldest_pending_age_seconds", (("source", "other"),))] == 0
    assert 3600 <= page[("paheko_recyclic_oldest_pending_age_seconds", (("source", "lab"),))] < 7200
    assert ("paheko_recyclic_last_notification_timestamp_seconds", (("source", "lab"),)) in page
    assert ("paheko_recyclic_last_notification_timestamp_seconds", (("source", "other"),)) not in page


def test_metrics_worker_counters_and_rejection_reasons(app, client):
    metrics = app.extensions["paheko_recyclic"].metrics
    metrics.snapshots.labels(source="lab", outcome="ok").inc()
    metrics.forwards.labels(source="lab", outcome="failed").inc(2)
    metrics.rejected("lab", "content_type")
    page = scrape(client)
    assert page[("paheko_recyclic_snapshots_total", (("outcome", "ok"), ("source", "lab")))] == 1
    assert page[("paheko_recyclic_forwards_total", (("outcome", "failed"), ("source", "lab")))] == 2
    assert page[("paheko_recyclic_notification_rejections_total", (("reason", "content_type"), ("source", "lab")))] == 1
    assert page[("paheko_recyclic_notifications_total", (("outcome", "rejected"), ("source", "lab")))] == 1


def test_metrics_refused_to_the_public_without_token(client):
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.7"}).status_code == 403
    # relayed by a reverse proxy on the same host: loopback peer, but not a local client
    assert client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.7"}).status_code == 403
    assert client.get("/metrics", headers={"Forwarded": "for=203.0.113.7"}).status_code == 403
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200


def test_metrics_bearer_token(token_app):
    client = token_app.test_client()
    public = {"REMOTE_ADDR": "203.0.113.7"}
    assert client.get("/metrics", environ_base=public, headers={"Authorization": f"Bearer {TOKEN}x"}).status_code == 403
    assert client.get("/metrics", environ_base=public, headers={"Authorization": f"Basic {TOKEN}"}).status_code == 403
    assert client.get("/metrics", environ_base=public).status_code == 403
    page = scrape(client, environ_base=public, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ("paheko_recyclic_ledger_up", ()) in page


def test_metrics_token_is_a_secret(tmp_path):
    doc = config_document(tmp_path)
    doc["receiver"]["metrics_token"] = {"env": "NO_SUCH_VARIABLE_FOR_METRICS"}
    with pytest.raises(Exception, match="NO_SUCH_VARIABLE_FOR_METRICS"):
        parse_config(doc)
    doc["receiver"]["metrics_token"] = TOKEN
    config = parse_config(doc)
    assert isinstance(config.receiver.metrics_token, Secret)
    assert TOKEN not in repr(config.receiver)
    assert config.receiver.raw_body_retention_days == 30


def test_multiprocess_metrics_directory_is_created(tmp_path, monkeypatch):
    target = tmp_path / "metrics"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(target))
    assert Metrics().multiprocess_dir == str(target)
    assert target.is_dir()


# -- logs -------------------------------------------------------------------------------------

def test_formatter_masks_secrets_everywhere(config):
    values = secrets_of(config)
    assert {SECOND_PASSWORD, "PahekoApiSecret42", "OtherApiSecret42"} <= values
    formatter = JsonFormatter(values)
    record = logging.makeLogRecord({
        "name": "receiver.test", "levelno": logging.WARNING, "levelname": "WARNING",
        "msg": "call to %s failed: Authorization: Basic %s, password=%s",
        "args": ("https://k2:OtherApiSecret42@other.invalid/api/sql", "b3RoZXI6U2VjcmV0MG90aGVy", "hunter22"),
        "event": "reread", "source": "other", "session_id": 7,
        "api_password": config.sources["other"].paheko.api_password,
        "headers": {"Authorization": "Basic b3RoZXI6U2VjcmV0MG90aGVy", "Accept": "*/*"},
        "detail": f"the key is PahekoApiSecret42 and the webhook one {SECOND_PASSWORD}",
        "nested": [{"token": f"Bearer {TOKEN}"}],
    })
    line = formatter.format(record)
    for leaked in ("OtherApiSecret42", "PahekoApiSecret42", SECOND_PASSWORD, "b3RoZXI6U2VjcmV0MG90aGVy",
                   "hunter22", TOKEN):
        assert leaked not in line
    data = json.loads(line)
    assert data["event"] == "reread" and data["source"] == "other" and data["session_id"] == 7
    assert data["level"] == "warning" and data["logger"] == "receiver.test"
    assert data["headers"]["Accept"] == "*/*"
    assert data["api_password"] == "***"
    assert "other.invalid/api/sql" in data["message"]


def test_exceptions_are_logged_masked(config):
    formatter = JsonFormatter(secrets_of(config))
    try:
        raise RuntimeError(f"refused with {SECOND_PASSWORD}")
    except RuntimeError:
        record = logging.getLogger("receiver.test").makeRecord(
            "receiver.test", logging.ERROR, __file__, 1, "boom", (), __import__("sys").exc_info())
    data = json.loads(formatter.format(record))
    assert "RuntimeError" in data["exception"] and SECOND_PASSWORD not in data["exception"]


def test_receiver_logs_one_json_event_per_line_without_secrets(client, capsys):
    capsys.readouterr()
    assert post(client, GOOD, basic(SECOND_USER, SECOND_PASSWORD)).status_code == 201
    assert post(client, GOOD, basic(SECOND_USER, SECOND_PASSWORD + "x")).status_code == 403
    out = capsys.readouterr().err
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    [accepted] = [line for line in lines if line["event"] == "notification"]
    assert accepted["source"] == "other" and accepted["session_id"] == 2 and accepted["state"] == "notified"
    assert accepted["duration_ms"] >= 0 and accepted["outcome"] == "new"
    assert SECOND_PASSWORD not in out
    assert basic(SECOND_USER, SECOND_PASSWORD)["Authorization"].split()[1] not in out


def test_configure_logging_is_idempotent(config):
    root = logging.getLogger()
    first = configure_logging(config, level="DEBUG")
    second = configure_logging(config)
    assert first not in root.handlers and root.handlers.count(second) == 1
    assert logging.getLogger("receiver").level == logging.INFO
