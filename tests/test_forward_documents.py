"""The webhook sink (Standard Webhooks over real HTTP) and the file sink (JSON lines): each session once."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import pytest
from flask import Flask, request
from standardwebhooks.webhooks import Webhook

from receiver.config import Secret
from receiver.dev.server import LocalServer
from receiver.outcomes import MustAct as DeliveryHeld, RetryLater as DeliveryRetry
from receiver.sinks.registry import build_sink
from receiver.sinks.file.config import FileSinkConfig
from receiver.sinks.webhook.config import WebhookSinkConfig
from receiver.sinks.file.sink import FileSink
from receiver.sinks.webhook.sink import WebhookSink
from receiver.sinks.recyclic.mapping.model import load_mapped
from tests.forward_support import deliver, mapped_session, new_entry, new_ledger

SECRET = "whsec_" + base64.b64encode(b"paheko-recyclic-test-secret-32by").decode()


@pytest.fixture
def ledger(tmp_path):
    ledger = new_ledger(tmp_path)
    yield ledger
    ledger.close()


class Consumer:
    """A webhook receiver that verifies signatures, keeps what it accepted, and answers scripted statuses."""

    def __init__(self):
        self.accepted: list[tuple[str, dict]] = []
        self.statuses: list[tuple[int, dict]] = []
        self.app = Flask(__name__)
        self.app.post("/hook")(self.receive)

    def receive(self):
        payload = Webhook(SECRET).verify(request.get_data(), dict(request.headers))  # raises when forged
        if self.statuses:
            status, headers = self.statuses.pop(0)
            return "", status, headers
        self.accepted.append((request.headers["webhook-id"], payload))
        return "", 204


@pytest.fixture
def consumer():
    consumer = Consumer()
    with LocalServer(consumer.app) as server:
        consumer.url = server.url + "/hook"
        yield consumer


def test_webhook_delivers_one_signed_document(ledger, consumer):
    mapped = mapped_session()
    entry = new_entry(ledger)
    sink = WebhookSink(WebhookSinkConfig(consumer.url, Secret(SECRET)))
    delivery = deliver(sink, entry, mapped, ledger)
    deliver(sink, entry, mapped, ledger)  # already done: nothing sent
    assert len(consumer.accepted) == 1
    webhook_id, payload = consumer.accepted[0]
    assert delivery.reference == webhook_id == payload["id"] and webhook_id.startswith("paheko-lab-7-")
    assert payload["type"] == "paheko.caisse.session"
    assert load_mapped(payload["data"]) == mapped  # the whole mapped session, integer cents and grams
    assert {k: f.status for k, f in ledger.forwards_of(entry.id).items()} == {("document", 7): "done"}


def test_webhook_retries_carry_the_same_id_and_changed_content_a_new_one(ledger, consumer):
    mapped = mapped_session()
    entry = new_entry(ledger)
    sink = WebhookSink(WebhookSinkConfig(consumer.url, Secret(SECRET)))
    consumer.statuses = [(503, {}), (429, {"Retry-After": "7"})]
    with pytest.raises(DeliveryRetry):
        deliver(sink, entry, mapped, ledger)
    with pytest.raises(DeliveryRetry) as retry:
        deliver(sink, entry, mapped, ledger)
    assert retry.value.retry_after == 7
    first = deliver(sink, entry, mapped, ledger)
    changed = deliver(sink, entry, replace(mapped, sales=mapped.sales[:2]), ledger)
    assert first.reference != changed.reference
    assert [webhook_id for webhook_id, _ in consumer.accepted] == [first.reference, changed.reference]


def test_webhook_refusal_is_held_and_unreachable_is_retried(ledger, consumer):
    sink = WebhookSink(WebhookSinkConfig(consumer.url, Secret(SECRET)))
    consumer.statuses = [(401, {})]
    with pytest.raises(DeliveryHeld) as held:
        deliver(sink, new_entry(ledger), mapped_session(), ledger)
    assert "refuse la session (HTTP 401)" in held.value.reason and SECRET not in str(held.value)
    gone = WebhookSink(WebhookSinkConfig("http://127.0.0.1:9/hook", Secret(SECRET), connect_timeout=1))
    with pytest.raises(DeliveryRetry, match="unreachable"):
        deliver(gone, new_entry(ledger, 8), mapped_session(session_id=8), ledger)


def test_file_sink_appends_each_session_once_and_fsyncs(ledger, tmp_path):
    path = tmp_path / "out" / "sessions.jsonl"
    sink = FileSink(path)
    entries = [new_entry(ledger, n) for n in (1, 2)]
    for entry in entries * 2:
        deliver(sink, entry, mapped_session(session_id=entry.session_id), ledger)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [load_mapped(line["data"]).session_id for line in lines] == [1, 2]
    assert lines[0]["data"]["sales"][0]["total_cents"] == 1850


def test_file_sink_settles_a_crash_after_writing(ledger, tmp_path):
    path = tmp_path / "sessions.jsonl"
    entry = new_entry(ledger)
    mapped = mapped_session()

    class Crash(BaseException):
        pass

    class DiesBeforeDone:
        def __getattr__(self, name):
            return getattr(ledger, name)

        def record_forward(self, *args, status, **kwargs):
            if status == "done":
                raise Crash
            ledger.record_forward(*args, status=status, **kwargs)

    with pytest.raises(Crash):
        deliver(FileSink(path), entry, mapped, DiesBeforeDone())
    assert ledger.forwards_of(entry.id)[("document", 7)].status == "sending"
    deliver(FileSink(path), entry, mapped, ledger)
    assert len(path.read_text().splitlines()) == 1
    assert ledger.forwards_of(entry.id)[("document", 7)].status == "done"


def test_file_sink_closes_off_a_line_cut_by_a_crash(ledger, tmp_path):
    path = tmp_path / "sessions.jsonl"
    path.write_text('{"id": "cut mid-wri')
    delivery = deliver(FileSink(path), new_entry(ledger), mapped_session(), ledger)
    lines = path.read_text().splitlines()
    assert lines[0] == '{"id": "cut mid-wri' and json.loads(lines[1])["id"] == delivery.reference


def test_build_sink_defaults_to_a_file_beside_the_ledger(tmp_path):
    class Beside:  # only the ledger's address matters to a file sink
        url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"

    sink = build_sink(FileSinkConfig(), source_name="lab", ledger=Beside)
    assert isinstance(sink, FileSink) and sink.path == tmp_path / "forwarded-lab.jsonl"
    relative = build_sink(FileSinkConfig(tmp_path.joinpath("x").relative_to(tmp_path)), source_name="lab",
                          ledger=Beside)
    assert relative.path == tmp_path / "x"
    Beside.url = "postgresql://db/ledger"
    with pytest.raises(ValueError, match="absolute path"):
        build_sink(FileSinkConfig(), source_name="lab", ledger=Beside)


def test_file_sink_write_failures_are_retried(ledger, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(DeliveryRetry, match="cannot append"):
        deliver(FileSink(blocker / "sessions.jsonl"), new_entry(ledger), mapped_session(), ledger)
