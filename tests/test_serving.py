"""The receiver as served (`paheko-recyclic run`): stalled clients cost no thread, HTTP-level abuse gets JSON 4xx.

Issue 13: 8 sockets sending half a request froze the former gunicorn set-up for as long as they stayed
open. Here 200 of them stay open (both variants) while notifications keep being answered. No timing
bound is asserted: each notification must simply be answered (the client waits up to 10 s, far above
a healthy answer, far below the stall that was observed).
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from receiver.dev import stalls
from receiver.dev.stalls import StalledClients
from receiver.ledger import Ledger
from receiver.serve import ServeOptions, make_server
from tests.conftest import SECOND_PASSWORD, SECOND_USER
from tests.test_intake import GOOD, basic
from tests.test_replay import raw_http

URL = "/api/paheko/caisse/v1/session-closed"
STALLED = 200


def notification(session_id: int) -> dict:
    return {**GOOD, "session_id": session_id}


def answered_notifications(url: str, first_id: int, count: int = 20) -> list[int]:
    statuses = []
    with httpx.Client(base_url=url, timeout=10) as client:
        for n in range(count):
            statuses.append(client.post(URL, json=notification(first_id + n), headers=basic()).status_code)
        statuses.append(client.get("/healthz").status_code)
    return statuses


@pytest.fixture
def receiver(served_receiver):
    return served_receiver()


def test_200_sockets_stalled_in_their_headers_leave_notifications_answered(receiver, tmp_path):
    with StalledClients("127.0.0.1", receiver.port, stalls.head(), STALLED) as stalled:
        time.sleep(0.5)  # let the server accept them all (it would have given each a thread before)
        assert answered_notifications(receiver.url, 1000) == [201] * 20 + [200]
        assert stalled.held() == STALLED
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    try:
        assert len(ledger.known_session_ids("lab", range(1000, 1020))) == 20
    finally:
        ledger.close()


def test_200_bodies_sent_one_byte_at_a_time_leave_notifications_answered(receiver):
    """With valid credentials, ``Content-Length: 100`` and a body that trickles in byte by byte."""
    first = stalls.trickling_body(URL, basic(SECOND_USER, SECOND_PASSWORD)["Authorization"])
    with StalledClients("127.0.0.1", receiver.port, first, STALLED, trickle=True) as stalled:
        time.sleep(0.5)
        assert answered_notifications(receiver.url, 2000) == [201] * 20 + [200]
        assert stalled.held() == STALLED


def test_proxy_headers_reach_the_app_through_the_server(served_receiver):
    """The server must pass X-Forwarded-For & co. on: the app alone decides whom to trust."""
    receiver = served_receiver('trusted_proxies = ["127.0.0.1"]')
    with httpx.Client(base_url=receiver.url, timeout=10) as client:
        assert client.get("/metrics").status_code == 200  # the host's own Prometheus
        for header in ({"X-Forwarded-For": "203.0.113.5"}, {"X-Real-IP": "203.0.113.5"}, {"Forwarded": ""}):
            assert client.get("/metrics", headers=header).status_code == 403, header
            assert "sources" not in client.get("/readyz", headers=header).json()
        # Behind the (trusted, loopback) proxy, a scanner's failures do not throttle the module.
        for _ in range(12):
            client.post(URL, json=GOOD, headers={**basic("u", "wrong"), "X-Forwarded-For": "198.51.100.66"})
        scanner = client.post(URL, json=GOOD, headers={**basic("u", "wrong"), "X-Forwarded-For": "198.51.100.66"})
        module = client.post(URL, json=GOOD, headers={**basic(), "X-Forwarded-For": "198.51.100.2"})
    assert scanner.status_code == 429 and module.status_code == 201


def test_oversize_chunked_body_is_413_json_not_truncated(receiver, tmp_path):
    body = json.dumps({**notification(77), "padding": "x" * 200_000}).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 8192]), body[i:i + 8192]) for i in range(0, len(body), 8192))
    head = (f"POST {URL} HTTP/1.1\r\nHost: x\r\nAuthorization: {basic()['Authorization']}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
    status, headers, answer = raw_http("127.0.0.1", receiver.port, head + chunks + b"0\r\n\r\n")
    assert status == 413 and "json" in headers["content-type"]
    assert "volumineux" in json.loads(answer)["error"]
    small = json.dumps(notification(78)).encode()
    status, _, answer = raw_http("127.0.0.1", receiver.port, head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(small), small))
    assert status == 201, answer  # chunked bodies within the limit are read whole
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    try:
        assert ledger.known_session_ids("lab", [77, 78]) == {78}
    finally:
        ledger.close()


@pytest.mark.parametrize("request_bytes, status", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400),  # waitress: 501
    (b"POST " + URL.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n", 413),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Basic \xff\xfe\xc3\r\n\r\n", 200),
    (b"POST " + URL.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Basic \xff\xfe\xc3\r\n\r\n", 401),
])
def test_protocol_level_abuse_gets_a_json_4xx(receiver, request_bytes, status):
    got, headers, body = raw_http("127.0.0.1", receiver.port, request_bytes.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1))
    assert got == status, body
    assert "json" in headers["content-type"]
    json.loads(body)
    output = receiver.kill()
    assert "Traceback" not in output


def test_stalled_socket_is_closed_after_the_channel_timeout():
    """In-process, with a 2 s timeout (production: 30 s, above Paheko's 10 s budget)."""
    options = ServeOptions(bind="127.0.0.1:0", channel_timeout=2, threads=1)
    server = make_server(lambda environ, start_response: [], options)
    loop = threading.Thread(target=server.run, daemon=True)
    loop.start()
    try:
        with StalledClients("127.0.0.1", server.effective_port, stalls.head(), 1) as stalled:
            [sock] = stalled.sockets
            sock.settimeout(30)
            assert sock.recv(1) == b""  # the server hung up: a stalled socket is not held forever
    finally:
        server.close()
