"""The Recyclic client over real HTTP (tokens, login limit, errors, reference data) and the sink configuration."""

from __future__ import annotations

import tomllib
from datetime import timedelta
from pathlib import Path

import pytest

from receiver.config import ConfigError, Secret, parse_config
from receiver.dev.recyclic import CATEGORIES, REPLAY_REGISTER, SITES, Fault
from receiver.dev.server import LocalServer
from receiver.sinks.file.config import FileSinkConfig
from receiver.sinks.recyclic.config import RecyclicSinkConfig
from receiver.sinks.registry import SinkSchema
from receiver.sinks.webhook.config import WebhookSinkConfig
from receiver.sinks.recyclic.client import (
    LOGIN_BUDGET, LOGIN_LIMIT, RecyclicAuthError, RecyclicClient, RecyclicRateLimited, RecyclicRefused, RecyclicUnavailable,
)
from tests.conftest import config_text
from tests.forward_support import Swappable, plug

_TARGET = Swappable()


@pytest.fixture(scope="module", autouse=True)
def _server():
    with LocalServer(_TARGET) as server:
        _TARGET.url = server.url
        yield


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("profile", ["v2", "legacy"])
def test_reference_data_in_both_profiles(profile):
    stand = plug(_TARGET, profile)
    with RecyclicClient(stand.config()) as client:
        assert [s.id for s in client.sites()] == [s.id for s in SITES]
        assert REPLAY_REGISTER.id in {r.id for r in client.registers()}
        categories = client.categories()
        assert {c.id for c in categories} == {c.id for c in CATEGORIES}
        assert any(not c.is_active for c in categories) and any(c.parent_id for c in categories)
        codes = [m.code for m in client.payment_methods()]
    assert codes == (["cash", "check", "card", "transfer", "donation"] if profile == "v2" else ["cash", "card", "check"])
    assert stand.log.count("POST", "/auth/login") == 1  # the token is cached


def test_logins_stay_under_recyclics_limit():
    stand = plug(_TARGET, "legacy", token_lifetime=timedelta(seconds=30))  # expires at once: a login per call
    clock = FakeClock()
    with RecyclicClient(stand.config(), clock=clock) as client:
        for _ in range(LOGIN_BUDGET):
            client.sites()
        with pytest.raises(RecyclicRateLimited) as limited:
            client.sites()
        assert 0 < limited.value.retry_after <= 60 and limited.value.sent is False
        assert stand.log.count("POST", "/auth/login") == LOGIN_BUDGET < LOGIN_LIMIT  # the next was never sent
        clock.now += 61
        stand.clock.advance(seconds=61)
        client.sites()
    assert stand.log.count("POST", "/auth/login") == LOGIN_BUDGET + 1


def test_a_second_401_after_logging_in_again_is_raised():
    stand = plug(_TARGET, "v2")
    with RecyclicClient(stand.config()) as client:
        client.sites()
        stand.app.faults.script("GET /sites/", Fault.error(401), Fault.error(401))
        with pytest.raises(RecyclicAuthError) as refused:
            client.sites()
    assert refused.value.status == 401
    assert stand.log.count("POST", "/auth/refresh") == 1 and stand.log.count("GET", "/sites/") == 3


def test_errors_carry_the_request_but_no_secret():
    stand = plug(_TARGET, "v2")
    config = stand.config(password=Secret("wrong-password-123"))
    with RecyclicClient(config) as client, pytest.raises(RecyclicAuthError) as refused:
        client.sites()
    text = str(refused.value)
    assert "/v1/auth/login" in text and "X-Request-Id" in text and "wrong-password-123" not in text
    with RecyclicClient(stand.config()) as client:
        with pytest.raises(RecyclicRefused) as missing:
            client.get("cash-sessions/00000000-0000-0000-0000-000000000000")
        assert (missing.value.status, missing.value.code) == (404, "NOT_FOUND")
        assert missing.value.request.request_id == stand.log.seen[-1].headers["x-request-id"]
        stand.app.faults.script("GET /sites/", Fault.error(502))
        with pytest.raises(RecyclicUnavailable):
            client.sites()


def test_sink_schema_dispatches_on_type_and_refuses_what_it_does_not_know():
    recyclic = SinkSchema().load({"type": "recyclic", "url": "https://r.example.org/api/v1/", "username": "u",
                                  "password": "p", "pin": "0420"})
    assert isinstance(recyclic, RecyclicSinkConfig) and recyclic.url == "https://r.example.org/api/v1"
    assert recyclic.pin == Secret("0420") and "0420" not in repr(recyclic)
    assert SinkSchema().load({"type": "file", "path": "/tmp/x.jsonl"}) == FileSinkConfig(Path("/tmp/x.jsonl"))
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    assert isinstance(SinkSchema().load({"type": "webhook", "url": "http://h/x", "secret": secret}), WebhookSinkConfig)


def test_sink_problems_are_reported_with_their_path():
    document = tomllib.loads("""
[receiver]
ledger = "sqlite:///l.sqlite"
[sources.lab.webhook]
user = "u"
password = "p"
[sources.lab.paheko]
url = "http://paheko.invalid"
api_user = "k"
api_password = "x"
[sources.lab.sink]
type = "recyclic"
url = "ftp://r"
username = "u"
password = "p"
pin = "12345"
colour = "blue"
[sources.other.webhook]
user = "v"
password = "p"
[sources.other.paheko]
url = "http://paheko.invalid"
api_user = "k"
api_password = "x"
[sources.other.sink]
type = "webhook"
url = "https://h.example.org/hook"
secret = "not-whsec"
""")
    with pytest.raises(ConfigError) as error:
        parse_config(document)
    assert error.value.problems == [
        "sources.lab.sink.colour: Unknown field.",
        "sources.lab.sink.pin: a Recyclic PIN is 4 digits",
        "sources.lab.sink.url: must be an http(s) URL",
        'sources.other.sink.secret: must be a Standard Webhooks secret: "whsec_" followed by base64',
    ]
    for name in ("lab", "other"):
        del document["sources"][name]["sink"]
    assert parse_config(document).sources["lab"].sink is None  # no sink: sessions wait


def _source_with(sink_profile: str | None, mapping_profile: str | None, methods: str = "") -> dict:
    tables = ("\n[sources.lab.mapping]\n" + (f'profile = "{mapping_profile}"\n' if mapping_profile else "") + methods
              + '\n[sources.lab.sink]\ntype = "recyclic"\nurl = "https://r.example.org/api/v1"\nusername = "u"\n'
              + 'password = "p"\n' + (f'profile = "{sink_profile}"\n' if sink_profile else ""))
    return tomllib.loads(config_text(Path("/tmp")) + tables)


def test_the_recyclic_line_is_the_sinks_setting_and_the_mapping_follows_it():
    lab = parse_config(_source_with("legacy", None)).sources["lab"]
    assert lab.sink.profile == lab.mapping.profile == "legacy" and lab.mapping.close_session is True
    old_place = parse_config(_source_with(None, "legacy")).sources["lab"]  # where it used to be: still read
    assert old_place.sink.profile == old_place.mapping.profile == "legacy"
    default = parse_config(_source_with(None, None)).sources["lab"]
    assert default.sink.profile == default.mapping.profile == "v2" and default.mapping.close_session is True
    with pytest.raises(ConfigError) as both:
        parse_config(_source_with("legacy", "v2"))
    assert any("keep profile in the sink table" in p for p in both.value.problems)
    with pytest.raises(ConfigError) as codes:  # 1.3's payment codes are checked against the sink's line
        parse_config(_source_with("legacy", None, 'methods = { "Virement" = "transfer" }\n'))
    assert any("legacy profile" in p for p in codes.value.problems)
