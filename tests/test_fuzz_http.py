"""Fuzzing the receiver at the HTTP level, through the real server process (`paheko-recyclic run`).

Hypothesis builds raw requests — bodies, headers (``Authorization`` as any bytes, proxy headers,
chunked framing) and paths/queries — and sends them on a socket. For every answer: never a 5xx, always
JSON (but ``/metrics``' Prometheus text), and every 2xx notification has its entry in the ledger. After
each run the server's log must hold no traceback and no error. Bounded: a few hundred requests per test.
"""

from __future__ import annotations

import base64
import json
import re
import string
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver.ledger import Ledger
from receiver.serve import ServeOptions
from tests.conftest import SECOND_PASSWORD, SECOND_USER, WEBHOOK_PASSWORD, WEBHOOK_USER
from tests.test_replay import raw_http

API = "/api/paheko/caisse"
NOTIFY_PATHS = (f"{API}/v1/session-closed", f"{API}/session-closed")
KNOWN_PATHS = (*NOTIFY_PATHS, f"{API}/v1/status", f"{API}/v1/ping", f"{API}/v1/hello", "/healthz", "/readyz", "/metrics", "/")
# Derandomized: the same few hundred cases every run (CI never flakes on a rare draw).
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                derandomize=True)
MAX_BODY = ServeOptions().max_body_bytes


def basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


VALID_AUTH = (basic(WEBHOOK_USER, WEBHOOK_PASSWORD), basic(SECOND_USER, SECOND_PASSWORD))
header_bytes = st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
any_text = st.one_of(st.text(st.characters(exclude_categories=()), max_size=30),  # lone surrogates included
                     st.text(st.characters(categories=["Cs", "Cc"]), min_size=1, max_size=3),
                     st.sampled_from(["\ud800", "é\udfff", "\x00", "😀"]))
int_like = st.one_of(st.integers(1, 10**6), st.integers(-(2**70), 2**70), st.integers(2**62, 2**64), st.floats(), st.booleans(), st.none(), any_text,
                     st.sampled_from(["12", " 7 ", "1e3", "-3", "9223372036854775807", "9223372036854775808"]))


def notification() -> st.SearchStrategy[dict]:
    payment = st.fixed_dictionaries({"method_id": int_like, "total": int_like},
                                    optional={"method": st.one_of(any_text, st.integers())})
    return st.fixed_dictionaries(
        {"event": st.one_of(st.just("session.closed"), any_text), "session_id": int_like},
        optional={"closed": st.one_of(st.just("2026-11-24 18:00:00"), any_text, st.integers()),
                  "result": int_like, "nb_tabs": int_like, "payments": st.one_of(st.lists(payment, max_size=3), int_like),
                  "event_id": st.one_of(any_text, st.integers(), st.none()), "module_version": any_text,
                  "extra": st.recursive(st.none() | st.integers() | any_text, lambda c: st.lists(c, max_size=3), max_leaves=8)},
    )


def one_field_off() -> st.SearchStrategy[dict]:
    """A valid notification but for one field: most are acknowledged, so the ledger check has work."""
    session_id = st.one_of(st.integers(1, 2**63 - 1), st.sampled_from([2**63, 1e20, 10**30, 2**63 - 1]))
    base = st.fixed_dictionaries({"event": st.just("session.closed"), "session_id": session_id,
                                  "result": st.integers(-(10**9), 10**9), "event_id": st.text(max_size=20)})
    field = st.sampled_from(["session_id", "session_id", "event_id", "event_id", "module_version", "result", "nb_tabs",
                             "closed", "event"])
    # The values of issue 13's 500s, beside random ones.
    known = st.sampled_from([2**63, -(2**63) - 1, 1e20, "\ud800", "a\udc00", "\x00", 10**30, "9" * 19])
    return st.tuples(base, field, st.one_of(known, known, any_text, int_like)).map(lambda t: {**t[0], t[1]: t[2]})


bodies = st.one_of(
    notification().map(lambda d: json.dumps(d).encode()),  # ensure_ascii: lone surrogates travel as \ud800
    one_field_off().map(lambda d: json.dumps(d).encode()),
    one_field_off().map(lambda d: json.dumps(d).encode()),  # (twice: mostly notifications)
    notification().map(lambda d: json.dumps(d, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    st.integers(1, 30_000).map(lambda depth: b'{"event":"session.closed","session_id":1,"x":' + b"[" * depth + b"]" * depth + b"}"),
    st.binary(max_size=200),
    st.sampled_from([b"", b"null", b"[]", b"{}", b"NaN", b'{"session_id": Infinity, "event": "session.closed"}',
                     b"\xef\xbb\xbf{}", b"x" * (MAX_BODY + 1)]),
)

#: For requests whose head may be refused: the server then answers and closes at once, and body bytes it
#: never read make its kernel reset the connection before the client reads the (JSON) answer.
small_bodies = st.one_of(bodies.filter(lambda b: len(b) < 2000), st.just(b'{"sessions": [1, 2]}'))
CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")  # refused in a header value (RFC 9110), by waitress too
AUTHORIZATIONS = st.one_of(st.sampled_from(VALID_AUTH), st.none(), header_bytes.map(lambda b: b"Basic " + b),
                           st.binary(max_size=40).map(lambda b: b"Basic " + base64.b64encode(b)))
CONTENT_TYPES = st.sampled_from([b"application/json", b"application/json; charset=utf-8", b"text/plain",
                                 b"application/json; charset=utf-16", None])


@st.composite
def requests(draw, paths=st.sampled_from(KNOWN_PATHS), body=bodies, extra_headers=st.just([]),
             methods=st.sampled_from(["POST"] * 4 + ["GET", "PUT", "DELETE", "HEAD", "OPTIONS"]),
             authorizations=None, content_types=None) -> tuple[str, str, bytes]:
    authorizations = AUTHORIZATIONS if authorizations is None else authorizations
    content_types = CONTENT_TYPES if content_types is None else content_types
    """(method, path, raw request bytes) with ``Connection: close``."""
    method = draw(methods)
    path = draw(paths)
    payload = draw(body) if method in ("POST", "PUT") else b""
    head = [f"{method} {path} HTTP/1.1".encode("latin-1"), b"Host: receiver"]
    authorization = draw(authorizations)
    if authorization is not None:
        head.append(b"Authorization: " + authorization)
    content_type = draw(content_types)
    if content_type:
        head.append(b"Content-Type: " + content_type)
    head.extend(draw(extra_headers))
    if any(CONTROL.search(line) for line in head):
        payload = payload[:1000]  # see small_bodies
    if payload and draw(st.booleans()):
        size = draw(st.integers(1, 4096))
        pieces = [payload[i:i + size] for i in range(0, len(payload), size)]
        head.append(b"Transfer-Encoding: chunked")
        framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    else:
        head.append(b"Content-Length: %d" % len(payload))
        framed = payload
    head.append(b"Connection: close")
    return method, path, b"\r\n".join(head) + b"\r\n\r\n" + framed


proxy_and_other_headers = st.lists(
    st.tuples(st.one_of(st.sampled_from(["X-Forwarded-For", "X-Real-IP", "Forwarded", "X-Forwarded-Proto", "Expect",
                                         "Accept", "Cookie", "User-Agent", "Accept-Encoding"]),
                        st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,15}", fullmatch=True)),
              header_bytes),
    max_size=5,
).map(lambda pairs: [name.encode() + b": " + value for name, value in pairs
                     if name.lower() not in ("content-length", "transfer-encoding", "connection", "host")])

fuzzed_paths = st.one_of(
    st.sampled_from(KNOWN_PATHS),
    st.text(st.characters(codec="utf-8"), max_size=40).map(lambda t: f"{API}/" + quote(t, safe="/%?&=,;+")),
    st.binary(max_size=20).map(lambda b: "/" + "".join(f"%{x:02X}" for x in b)),
    st.text(string.printable.strip(), max_size=30).map(lambda t: f"{API}/v1/status?sessions=" + quote(t, safe=",")),
    st.one_of(st.integers(-(2**70), 2**70), st.floats()).map(lambda n: f"{API}/v1/status?sessions={n}"),
).map(lambda p: p if p.startswith("/") else "/" + p)


@pytest.fixture
def fuzz_target(served_receiver, tmp_path):
    receiver = served_receiver('trusted_proxies = ["127.0.0.1", "::1"]')  # fuzzed X-Forwarded-For gets parsed
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    counts = {"requests": 0, "accepted": 0}

    def send(method: str, path: str, raw: bytes) -> None:
        status, headers, body = raw_http("127.0.0.1", receiver.port, raw)
        counts["requests"] += 1
        assert status < 500, (raw[:300], status, body[:300])
        if method == "HEAD" or status in (204, 304) or method == "OPTIONS" and status == 200 and not body:
            return  # no body (OPTIONS: Flask's automatic answer, an Allow header)
        if path.split("?")[0] == "/metrics" and status == 200:
            assert headers["content-type"].startswith("text/plain")
            return
        assert "application/json" in headers.get("content-type", ""), (raw[:300], status, headers)
        answer = json.loads(body)
        if 200 <= status < 300 and method == "POST" and path.rstrip("/") in NOTIFY_PATHS:
            counts["accepted"] += 1
            entry = ledger.get(answer["source"], answer["session_id"])
            assert entry is not None, answer  # every acknowledgement is in the ledger

    yield send, counts
    print(f"fuzz: {counts['requests']} requests, {counts['accepted']} notifications acknowledged and found in the ledger")
    ledger.close()
    output = receiver.kill(15)  # SIGTERM: a clean stop, then read everything it logged
    assert "Traceback" not in output, output[-3000:]
    events = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert not [e for e in events if e["level"] in ("error", "critical")], events[-5:]


FUZZED = {
    # Bodies: valid credentials and content type, so the body is what gets judged (and often stored).
    "bodies": (400, requests(paths=st.sampled_from(NOTIFY_PATHS * 3 + (f"{API}/v1/status",)), methods=st.just("POST"),
                             authorizations=st.sampled_from(VALID_AUTH), content_types=st.just(b"application/json"))),
    "headers": (250, requests(body=small_bodies, extra_headers=proxy_and_other_headers)),
    "paths": (250, requests(paths=fuzzed_paths, body=small_bodies)),
}


@pytest.mark.parametrize("part", FUZZED)
def test_fuzz(fuzz_target, part):
    send, counts = fuzz_target
    examples, strategy = FUZZED[part]

    @settings(FUZZ, max_examples=examples)
    @given(strategy)
    def run(request):
        send(*request)

    run()
    assert counts["requests"] >= examples
    if part == "bodies":
        assert counts["accepted"] > 0  # the ledger check had acknowledgements to verify
