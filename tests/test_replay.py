"""The captured module request, replayed byte for byte; durability; the replay command."""

from __future__ import annotations

import json
import socket

from click.testing import CliRunner

from receiver.cli import main
from receiver.commands.replay import CapturedRequest, encode_like_paheko
from receiver.ledger import Ledger
from tests.conftest import FIXTURES


def raw_http(host: str, port: int, request: bytes) -> tuple[int, dict, bytes]:
    """Send bytes on a socket and read the whole answer (Connection: close semantics)."""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    return int(status_line.split()[1]), headers, body


def captured_bytes() -> bytes:
    data = (FIXTURES / "module-request.http").read_bytes()
    # The capture uses bare LF line ends; HTTP wants CRLF in the head. The body stays byte for byte.
    head, _, body = data.partition(b"\n\n")
    return head.replace(b"\n", b"\r\n") + b"\r\nConnection: close\r\n\r\n" + body


def assert_decodable_by_paheko(headers: dict, body: bytes) -> dict:
    """Paheko decodes an answer as JSON only when its Content-Type contains '/json'."""
    assert "/json" in headers["content-type"]
    decoded = json.loads(body)
    assert decoded["status"] == "accepted" and isinstance(decoded["message"], str)
    return decoded


def test_captured_request_byte_for_byte_through_werkzeug(live_receiver, ledger):
    host, port = live_receiver.url.removeprefix("http://").split(":")
    status, headers, body = raw_http(host, int(port), captured_bytes())
    assert status == 201
    decoded = assert_decodable_by_paheko(headers, body)
    assert decoded["session_id"] == 2 and decoded["new"] is True
    entry = ledger.get("lab", 2)
    assert entry.summary["result"] == 7290
    [note] = ledger.notifications_of(entry.id)
    assert note["raw_body"].encode() == CapturedRequest.parse_http((FIXTURES / "module-request.http").read_bytes()).body


def test_captured_request_through_the_served_receiver_survives_kill(served_receiver, tmp_path):
    """Durability: the entry is in the ledger even when the server dies right after its 2xx."""
    receiver = served_receiver()
    status, headers, body = raw_http("127.0.0.1", receiver.port, captured_bytes())
    assert status == 201
    assert_decodable_by_paheko(headers, body)
    receiver.kill()  # SIGKILL: no clean shutdown, no flush
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    try:
        entry = ledger.get("lab", 2)
        assert entry is not None and entry.summary["result"] == 7290
    finally:
        ledger.close()


def test_parse_http_keeps_path_body_and_headers():
    request = CapturedRequest.parse_http((FIXTURES / "module-request.http").read_bytes())
    assert request.method == "POST" and request.path == "paheko/caisse/session-closed"
    assert request.headers["Authorization"] == "Basic dTpw" and len(request.body) == 227
    assert b"Esp\\u00e8ces" in request.body


def test_encoding_matches_php_json_encode():
    assert encode_like_paheko({"a": "Espèces/CB", "n": -3}) == b'{"a":"Esp\\u00e8ces\\/CB","n":-3}'


def run_cli(config_path, *args):
    return CliRunner().invoke(main, ["--config", str(config_path), *args], catch_exceptions=False)


def test_replay_command_lands_in_ledger_with_overrides(live_receiver, ledger, tmp_path):
    config_path = tmp_path / "config.toml"
    from tests.conftest import config_text

    config_path.write_text(config_text(tmp_path))
    result = run_cli(config_path, "replay", str(FIXTURES / "module-request.http"), "--to", live_receiver.url,
                     "--source", "lab", "--set", "session_id=9", "--set", "result=-300")
    assert result.exit_code == 0, result.output
    assert "HTTP 201" in result.output and '"new": true' in result.output
    assert ledger.get("lab", 9).summary["result"] == -300


def test_replay_json_payload_and_error_exit(live_receiver, tmp_path):
    payload = tmp_path / "p.json"
    payload.write_text(json.dumps({"event": "session.closed", "session_id": 0}))
    result = CliRunner().invoke(main, ["replay", str(payload), "--to", live_receiver.url])
    assert result.exit_code == 1
    assert "HTTP 401" in result.output  # no --source and no captured Authorization header
