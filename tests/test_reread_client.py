"""The /api/sql client: retries, typed errors and request hygiene, mostly through the local Paheko stand-in."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from receiver import __version__
from receiver.config import PahekoApi, Secret
from receiver.reread.client import (
    PahekoAuthError,
    PahekoBrokenResponse,
    PahekoClient,
    PahekoError,
    PahekoProtocolError,
    PahekoSQLError,
    PahekoUnavailable,
    sql_int,
    sql_text,
)
from tests.paheko_db import served

FIXTURE = Path(__file__).parent / "fixtures" / "paheko-caisse.sqlite"
QUERY = "SELECT id, result FROM plugin_pos_sessions ORDER BY id"


def recorder():
    waits: list[float] = []
    return waits, waits.append


def test_plain_query():
    with served(FIXTURE) as (client, app):
        result = client.sql(QUERY, complete=True)
    assert result.rows == [{"id": 1, "result": 12450}, {"id": 2, "result": 7290}]
    assert result.count == 2 and result.size > 0 and app.stats.requests == 1


@pytest.mark.parametrize("fault", ["server_error", "cut_json", "close"])
def test_transient_fault_then_success(fault):
    waits, sleep = recorder()
    with served(FIXTURE, sleep=sleep) as (client, app):
        app.faults.add(fault, times=2)
        result = client.sql(QUERY)
    assert [row["id"] for row in result.rows] == [1, 2]
    assert app.stats.requests == 3 and len(waits) == 2
    # Exponential backoff (0.5 s, 1 s) with jitter in [50 %, 100 %] of each step.
    assert 0.25 <= waits[0] <= 0.5 <= waits[1] <= 1.0


def test_timeouts_are_retried_then_reported():
    waits, sleep = recorder()
    with served(FIXTURE, sleep=sleep, retries=2, read_timeout=0.2) as (client, app):
        app.faults.add("delay", times=3, seconds=1.0)
        with pytest.raises(PahekoUnavailable) as error:
            client.sql(QUERY)
    assert error.value.transient and error.value.attempts == 3 and len(waits) == 2
    assert "did not answer in time" in str(error.value) and QUERY[:20] in str(error.value)


def test_rate_limit_honours_retry_after():
    waits, sleep = recorder()
    with served(FIXTURE, sleep=sleep) as (client, app):
        app.faults.add("rate_limit", seconds=7)
        client.sql(QUERY)
    assert waits and waits[0] >= 7


def test_cut_json_every_time_is_a_broken_response():
    with served(FIXTURE, retries=1) as (client, app):
        app.faults.add("cut_json", times=2)
        with pytest.raises(PahekoBrokenResponse) as error:
            client.sql(QUERY)
    assert error.value.attempts == 2 and error.value.status == 200


def test_wrong_credentials_are_not_retried_and_never_echo_the_secret():
    with served(FIXTURE, secret="not-the-secret-42") as (client, app):
        with pytest.raises(PahekoAuthError) as error:
            client.sql(QUERY)
        assert app.stats.requests == 1
    text = str(error.value) + repr(error.value.request)
    assert "not-the-secret-42" not in text and "api_password" in text and error.value.status == 403
    assert not error.value.transient


def test_sql_errors_are_not_retried():
    with served(FIXTURE) as (client, app):
        with pytest.raises(PahekoSQLError) as error:
            client.sql("SELECT nope FROM plugin_pos_sessions")
        assert app.stats.requests == 1
    assert error.value.paheko_message.endswith("no such column: nope")


def test_unknown_path_is_a_protocol_error():
    with served(FIXTURE) as (client, _):
        client.endpoint = client.endpoint.replace("/api/sql", "/api/nope")
        with pytest.raises(PahekoProtocolError, match="url"):
            client.sql("SELECT 1")


def test_headers_auth_and_body():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"count": 1, "results": [{"1": 1}]})

    api = PahekoApi(url="https://user:pw@paheko.example.org/", api_user="key", api_password=Secret("s3cr3t"))
    with PahekoClient("lab", api, transport=httpx.MockTransport(handler)) as client:
        result = client.sql("SELECT 1")
    (request,) = seen
    assert request.headers["user-agent"] == f"paheko-recyclic/{__version__}"
    assert request.headers["authorization"] == httpx.BasicAuth("key", "s3cr3t")._auth_header
    assert request.url.path == "/api/sql" and b'"sql": "SELECT 1"' in request.content.replace(b'":"', b'": "')
    assert result.request.url == "https://paheko.example.org/api/sql"  # no credentials in reports
    assert "pw" not in str(result.request)


def test_errors_share_one_base():
    for cls in (PahekoAuthError, PahekoBrokenResponse, PahekoProtocolError, PahekoSQLError, PahekoUnavailable):
        assert issubclass(cls, PahekoError)


def test_literals():
    assert sql_int(42) == "42"
    assert sql_text("l'été") == "'l''été'"
    for bad in (True, "1", 1.0):
        with pytest.raises(TypeError):
            sql_int(bad)
    with pytest.raises(ValueError):
        sql_text("a\x00b")
