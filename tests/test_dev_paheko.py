"""The Paheko stand-in against the 71 exchanges captured on a real Paheko 1.3.22, over real HTTP."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from receiver.dev.paheko import DEFAULT_CREDENTIALS, create_paheko_app, paheko_command
from receiver.dev.server import LocalServer

FIXTURES = Path(__file__).parent / "fixtures"
TRANSCRIPTS = json.loads((FIXTURES / "api-sql-transcripts.json").read_text(encoding="utf-8"))
CREDENTIALS = {"admin": ("admin-secret", "admin"), "writer": ("write-secret", "write"), "reader": ("read-secret", "read")}
AUTH_LABELS = {
    "admin key": ("admin", "admin-secret"),
    "write key": ("writer", "write-secret"),
    "read key": ("reader", "read-secret"),
    "admin key with wrong secret": ("admin", "wrong-secret"),
    "unknown key with wrong secret": ("nobody", "wrong-secret"),
    None: None,
}
# Binary bodies are recorded as a description: compare the content type and the magic bytes.
MAGIC_BYTES = {"SQLite 3.x database": b"SQLite format 3\x00", "OpenDocument": b"PK\x03\x04", "Microsoft Excel": b"PK\x03\x04"}
ELIDED = "\n[... truncated: body has "
# The capture lost the query string of this GET; its answer is the one of `sql-json-body`, whose SQL this is.
LOST_QUERY_STRINGS = {"sql-get-query-param": "?sql=SELECT%20*%20FROM%20plugin_pos_sessions%20ORDER%20BY%20id"}


def _recorded_body(body: str | None) -> str | None:
    """Two bodies were recorded in bash's $'…' quoting ("$SELECT 1;\\n-- c"): undo it."""
    if body is not None and body.startswith("$"):
        return body[1:].replace("\\n", "\n")
    return body


@pytest.fixture(scope="module")
def db_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("paheko") / "paheko.sqlite"
    shutil.copyfile(FIXTURES / "paheko-caisse.sqlite", path)
    return path


@pytest.fixture(scope="module")
def db_digest(db_copy: Path) -> str:
    return hashlib.sha256(db_copy.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def server(db_copy: Path, db_digest: str):
    app = create_paheko_app(db_copy, CREDENTIALS)
    with LocalServer(app) as local:
        yield local, app
    assert hashlib.sha256(db_copy.read_bytes()).hexdigest() == db_digest, "the database file was modified"
    assert sorted(p.name for p in db_copy.parent.iterdir()) == ["paheko.sqlite"], "journal files were left"


@pytest.fixture
def client(server):
    local, app = server
    app.faults.clear()
    with httpx.Client(base_url=local.url, timeout=httpx.Timeout(10.0)) as http:
        yield http


def _send(client: httpx.Client, request: dict) -> httpx.Response:
    auth = AUTH_LABELS[request["auth"]]
    headers = {"Content-Type": request["content_type"]} if request["content_type"] else {}
    body = _recorded_body(request["body"])
    if request["form"] is not None:  # sent as multipart (curl -F)
        files = {name: (None, value) for name, value in request["form"].items()}
        return client.request(request["method"], request["path"], auth=auth, files=files)
    return client.request(request["method"], request["path"], auth=auth, headers=headers,
                          content=body.encode() if body is not None else None)


@pytest.mark.parametrize("exchange", TRANSCRIPTS, ids=[t["name"] for t in TRANSCRIPTS])
def test_replays_transcript(client: httpx.Client, db_copy: Path, exchange: dict) -> None:
    request = dict(exchange["request"], path=exchange["request"]["path"] + LOST_QUERY_STRINGS.get(exchange["name"], ""))
    expected = exchange["response"]
    response = _send(client, request)

    assert response.status_code == expected["status"], response.text
    assert response.headers["content-type"] == expected["content_type"]
    if expected["body"].startswith("[binary body]"):
        magic = next(m for label, m in MAGIC_BYTES.items() if label in expected["body"])
        assert response.content.startswith(magic)
        if request["path"] == "/api/download":
            assert response.content == db_copy.read_bytes()
        return
    if ELIDED in expected["body"]:  # the capture kept only the head and the tail of this long body
        head, marker, tail = re.split(r"\n(\[\.\.\. truncated: .*?\])\n", expected["body"])
        rows, count = map(int, re.findall(r"\d+", marker))
        assert response.text.startswith(head) and response.text.endswith(tail)
        assert (len(response.json()["results"]), response.json()["count"]) == (rows, count)
        return
    assert response.text == expected["body"]  # byte-exact: layout, escapes, CSV quoting, broken JSON
    if expected["content_type"].startswith("application/json") and exchange["name"] != "blob-invalid-utf8-row":
        assert response.json() == json.loads(expected["body"])


def test_transcripts_are_all_replayed() -> None:
    assert len(TRANSCRIPTS) == 71
    assert {t["request"]["auth"] for t in TRANSCRIPTS} <= AUTH_LABELS.keys()
