"""Issue 13: bad input gets a JSON 4xx (never 500), nobody else's failures lock a module out,
proxy headers are believed only from configured proxies, /metrics and /readyz give nothing away."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from receiver.app import create_app
from receiver.cli import main as cli
from receiver.config import ConfigError, parse_config
from receiver.proxies import client_address, parse_networks
from tests.conftest import SECOND_PASSWORD, SECOND_USER, WEBHOOK_USER, config_document, config_text
from tests.test_intake import GOOD, URL, basic, post

STATUS = "/api/paheko/caisse/v1/status"
INT64_MAX = 2**63 - 1


def raw_post(client, raw: bytes, headers=None):
    return client.post(URL, data=raw, headers={**basic(), **(headers or {})}, content_type="application/json")


def assert_json_400(response, needle: str = ""):
    assert response.status_code == 400, response.get_data(as_text=True)
    message = response.get_json()["error"]
    assert needle in message
    return message


# -- ids bounded to SQLite's signed 64-bit INTEGER --------------------------------------------

@pytest.mark.parametrize("raw_id", [b"9223372036854775808", b"1e20", b"-9223372036854775809", b"1e300",
                                    b"18446744073709551616", b"123456789012345678901234567890"])
def test_session_id_beyond_64_bits_is_400(client, ledger, raw_id):
    body = json.dumps({**GOOD, "session_id": 0}).encode().replace(b'"session_id": 0', b'"session_id": ' + raw_id)
    assert_json_400(raw_post(client, body), "session_id")


def test_largest_64_bit_session_id_is_stored(client, ledger):
    assert post(client, {**GOOD, "session_id": INT64_MAX}).status_code == 201
    assert ledger.get("lab", INT64_MAX) is not None


@pytest.mark.parametrize("field, value", [("result", 2**64), ("nb_tabs", 1e19), ("payments", [{"method_id": 2**63, "total": 1}]),
                                          ("payments", [{"method_id": 1, "total": -(2**64)}])])
def test_other_integers_beyond_64_bits_are_400(client, field, value):
    assert_json_400(post(client, {**GOOD, field: value}), field)


@pytest.mark.parametrize("query", ["9223372036854775808", "1,99999999999999999999", "1e20", "١٢", "1_000"])
def test_status_query_ids_out_of_range_or_not_plain_digits_are_400(client, query):
    assert_json_400(client.get(f"{STATUS}?sessions={query}", headers=basic()), "sessions")


@pytest.mark.parametrize("sessions", [[2**63], [1e20], [True], [[1]], [{"a": 1}], ["1", None], 2**70])
def test_status_post_list_out_of_range_or_malformed_is_400(client, sessions):
    assert_json_400(client.post(STATUS, json={"sessions": sessions}, headers=basic()), "sessions")


def test_status_accepts_the_largest_id_and_numeric_strings(client):
    answer = client.post(STATUS, json={"sessions": [INT64_MAX, "2"]}, headers=basic())
    assert answer.status_code == 200 and set(answer.get_json()["sessions"]) == {str(INT64_MAX), "2"}


# -- JSON depth, text the ledger can store, encodings --------------------------------------------

@pytest.mark.parametrize("depth", [33, 10_000, 30_000])
def test_deeply_nested_json_is_400(client, depth):
    body = b'{"event":"session.closed","session_id":5,"x":' + b"[" * depth + b"]" * depth + b"}"
    assert_json_400(raw_post(client, body), "imbriqué")


def test_moderate_nesting_in_an_unknown_field_is_accepted(client):
    body = b'{"event":"session.closed","session_id":5,"x":' + b"[" * 20 + b"]" * 20 + b"}"
    assert raw_post(client, body).status_code == 201


@pytest.mark.parametrize("field", ["event_id", "module_version", "event"])
@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "a\\u0000b"])
def test_unstorable_text_is_400(client, ledger, field, escape):
    body = json.dumps({**GOOD, field: "PLACEHOLDER"}).encode().replace(b"PLACEHOLDER", escape.encode())
    assert_json_400(raw_post(client, body), field)
    assert ledger.get("lab", GOOD["session_id"]) is None


def test_unstorable_payment_label_is_400(client):
    body = json.dumps({**GOOD, "payments": [{"method_id": 1, "total": 5, "method": "X"}]}).encode()
    assert_json_400(raw_post(client, body.replace(b'"X"', b'"\\ud83d"')), "payments")


def test_valid_astral_characters_are_stored(client, ledger):
    assert post(client, {**GOOD, "event_id": "évt-😀"}).status_code == 201
    [note] = ledger.notifications_of(ledger.get("lab", GOOD["session_id"]).id)
    assert "😀" in note["raw_body"] or "\\ud83d" in note["raw_body"]


@pytest.mark.parametrize("raw", [json.dumps(GOOD).encode("utf-16"), b"\xff\xfe{}", b'{"event": "\xe9"}'])
def test_bodies_that_are_not_utf8_are_400(client, raw):
    assert_json_400(raw_post(client, raw), "JSON")


# -- Authorization: any bytes ----------------------------------------------------------------------

@pytest.mark.parametrize("header", ["Basic \xff\xfe\xc3", "Basic", "Basic ====", "Basic \x00\x01", "Digest \xe9=\xe9",
                                    "Basic w7w6cA==", "Basic 7aCAOnA="])  # "ü:p"; a lone surrogate user
def test_any_authorization_bytes_are_401_or_403_json(client, header):
    answer = client.post(URL, json=GOOD, environ_base={"HTTP_AUTHORIZATION": header})
    assert answer.status_code in (401, 403) and "error" in answer.get_json()


def test_metrics_token_check_survives_any_bytes(client):
    answer = client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.7", "HTTP_AUTHORIZATION": "Bearer \xff\xfe"})
    assert answer.status_code == 403


# -- the throttle never locks out someone else ---------------------------------------------------

def fail(client, user: str, address: str, times: int = 10):
    for _ in range(times):
        answer = client.post(URL, json=GOOD, headers=basic(user, "wrong"), environ_base={"REMOTE_ADDR": address})
        assert answer.status_code in (403, 429)


def test_a_scanner_on_the_same_address_does_not_lock_the_module_out(client):
    for user in ("admin", "root", "paheko", WEBHOOK_USER * 2):
        fail(client, user, "127.0.0.1")
    assert post(client, GOOD).status_code == 201  # the real module, same address (one proxy)
    assert post(client, {**GOOD, "session_id": 3}, basic(SECOND_USER, SECOND_PASSWORD)).status_code == 201


def test_guessing_one_user_throttles_only_that_user_from_that_address(client):
    fail(client, WEBHOOK_USER, "198.51.100.4")
    from_there = client.post(URL, json=GOOD, headers=basic(), environ_base={"REMOTE_ADDR": "198.51.100.4"})
    assert from_there.status_code == 429 and int(from_there.headers["Retry-After"]) >= 1
    assert post(client, GOOD).status_code == 201  # same user, the module's own address
    other_user = client.post(URL, json={**GOOD, "session_id": 4}, headers=basic(SECOND_USER, SECOND_PASSWORD),
                             environ_base={"REMOTE_ADDR": "198.51.100.4"})
    assert other_user.status_code == 201


# -- proxy headers only from configured proxies -----------------------------------------------------

NETS = parse_networks(["127.0.0.1", "::1", "172.18.0.0/16"])


@pytest.mark.parametrize("peer, xff, client_ip", [
    ("203.0.113.9", "1.2.3.4", "203.0.113.9"),            # a direct client cannot pick its address
    ("127.0.0.1", "198.51.100.7", "198.51.100.7"),         # the local proxy's word
    ("127.0.0.1", "6.6.6.6, 198.51.100.7", "198.51.100.7"),  # left of the proxy's hop: client-written
    ("127.0.0.1", "198.51.100.7, 172.18.0.5", "198.51.100.7"),  # two trusted proxies in a row
    ("127.0.0.1", "garbage", "127.0.0.1"),
    ("127.0.0.1", "", "127.0.0.1"),
    ("::ffff:127.0.0.1", "198.51.100.7", "198.51.100.7"),
    ("::1", "2001:db8::5", "2001:db8::5"),
])
def test_client_address(peer, xff, client_ip):
    assert client_address(peer, xff, NETS) == client_ip


def test_no_trusted_proxy_means_headers_are_ignored():
    assert client_address("127.0.0.1", "198.51.100.7", ()) == "127.0.0.1"


def proxied_app(tmp_path, proxies: str):
    return create_app(parse_config(config_document(tmp_path, f"trusted_proxies = {proxies}"), tmp_path / "c.toml"))


def test_rotating_forwarded_for_from_an_untrusted_peer_gains_nothing(tmp_path):
    app = proxied_app(tmp_path, '["127.0.0.1"]')
    client = app.test_client()
    try:
        answers = [client.post(URL, json=GOOD, headers={**basic(WEBHOOK_USER, "wrong"), "X-Forwarded-For": f"10.9.0.{n}"},
                               environ_base={"REMOTE_ADDR": "203.0.113.50"}).status_code for n in range(12)]
        assert answers[:10] == [403] * 10 and answers[10:] == [429, 429]
        # Through the trusted proxy, two real clients stay apart.
        for n in range(10):
            client.post(URL, json=GOOD, headers={**basic(WEBHOOK_USER, "wrong"), "X-Forwarded-For": "198.51.100.1"})
        module = client.post(URL, json=GOOD, headers={**basic(), "X-Forwarded-For": "198.51.100.2"})
        assert module.status_code == 201
    finally:
        app.extensions["paheko_recyclic"].ledger.close()


@pytest.mark.parametrize("value, needle", [("1", "list"), ('["not-an-ip"]', "not-an-ip"), ('["10.0.0.0/33"]', "10.0.0.0/33")])
def test_trusted_proxies_must_be_addresses(tmp_path, value, needle):
    with pytest.raises(ConfigError) as caught:
        parse_config(config_document(tmp_path, f"trusted_proxies = {value}"))
    assert any("trusted_proxies" in p and needle in p for p in caught.value.problems)


def check_config(tmp_path, receiver_settings: str, bind: str | None = None):
    path = tmp_path / "c.toml"
    path.write_text(config_text(tmp_path, receiver_settings))
    env = {"PAHEKO_RECYCLIC_BIND": bind} if bind else {}
    return CliRunner().invoke(cli, ["--config", str(path), "check-config"], env=env)


def test_check_config_warns_behind_a_proxy_without_trusted_proxies(tmp_path):
    result = check_config(tmp_path, "")
    assert result.exit_code == 0 and "trusted_proxies" in result.output and "warning" in result.output
    assert "warning" not in check_config(tmp_path, 'trusted_proxies = ["127.0.0.1", "::1"]').output
    assert "warning" not in check_config(tmp_path, "", bind="0.0.0.0:8000").output  # Paheko calls directly
    assert "any client" in check_config(tmp_path, 'trusted_proxies = ["0.0.0.0/0"]').output


def test_init_writes_loopback_proxies_uncommented(tmp_path):
    path = tmp_path / "new.toml"
    assert CliRunner().invoke(cli, ["init", str(path)]).exit_code == 0
    from receiver.config import load_config

    assert load_config(path).receiver.trusted_proxies == ("127.0.0.1", "::1")


# -- /metrics and /readyz ----------------------------------------------------------------------------

@pytest.mark.parametrize("header", [{"X-Real-IP": "127.0.0.1"}, {"X-Forwarded-For": ""}, {"Forwarded": ""},
                                    {"Forwarded": "for=127.0.0.1"}, {"X-Forwarded-For": "127.0.0.1"}])
def test_metrics_from_loopback_with_any_proxy_header_needs_the_token(client, header):
    assert client.get("/metrics", headers=header).status_code == 403
    assert client.get("/metrics").status_code == 200


def test_metrics_through_a_trusted_proxy_still_needs_the_token(tmp_path):
    app = proxied_app(tmp_path, '["127.0.0.1"]')
    try:
        assert app.test_client().get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"}).status_code == 403
    finally:
        app.extensions["paheko_recyclic"].ledger.close()


def test_readyz_names_no_source_publicly(client):
    public = client.get("/readyz", environ_base={"REMOTE_ADDR": "203.0.113.7"})
    assert public.status_code == 200 and public.get_json() == {"status": "ready", "ledger": "writable"}
    proxied = client.get("/readyz", headers={"X-Forwarded-For": "203.0.113.7"})
    assert "sources" not in proxied.get_json() and "lab" not in proxied.get_data(as_text=True)
    assert client.get("/readyz").get_json()["sources"] == ["lab", "other"]  # the operator, on the host


def test_readyz_flood_costs_one_ledger_check(client, app, monkeypatch):
    svc = app.extensions["paheko_recyclic"]
    writes = []
    monkeypatch.setattr(svc.ledger, "check_writable", lambda: writes.append(1))
    for _ in range(200):
        assert client.get("/readyz", environ_base={"REMOTE_ADDR": "203.0.113.7"}).status_code == 200
    assert len(writes) == 1


def test_readyz_reports_a_failing_ledger_and_rechecks_it(client, app, monkeypatch):
    svc = app.extensions["paheko_recyclic"]

    def broken():
        raise OSError("disk full")

    monkeypatch.setattr(svc.ledger, "check_writable", broken)
    monkeypatch.setattr(svc.readiness, "retry", 0.0)
    assert client.get("/readyz").status_code == 503
    monkeypatch.setattr(svc.ledger, "check_writable", lambda: None)
    assert client.get("/readyz").status_code == 200
