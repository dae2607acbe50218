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


ADMIN = AUTH_LABELS["admin key"]


def _sql(client: httpx.Client, sql: str) -> httpx.Response:
    return client.post("/api/sql", auth=ADMIN, content=sql.encode())


@pytest.mark.parametrize(("sql", "count", "results"), [
    ("SELECT id FROM plugin_pos_tabs ORDER BY id LIMIT 1, 2", 10, [{"id": 2}, {"id": 3}]),
    ("SELECT * FROM (SELECT id FROM plugin_pos_tabs LIMIT 4)", 4, [{"id": i} for i in range(1, 5)]),
    ("SELECT 1 AS a -- trailing comment", 0, [{"a": 1}]),
    ("SELECT 'a;b' AS a; DELETE FROM users", 0, [{"a": "a;b"}]),
    ("SELECT NULL AS a, 2 AS a, 3 AS a", 1, [{"a": 2, "a_2": 3}]),
    ("SELECT 0 AS '0', 1 AS '1'", 1, [[0, 1]]),
    ("SELECT 2.0 AS f, 1e25 AS g, 'x/y' AS s", 1, [{"f": 2, "g": 1e25, "s": "x/y"}]),
    ("SELECT id, password, pgp_key, otp_secret, otp_recovery_codes FROM users", 1,
     [{"id": 1, "password": None, "pgp_key": None, "otp_secret": None, "otp_recovery_codes": None}]),
])
def test_sql_semantics_beyond_the_transcripts(client: httpx.Client, sql: str, count: int, results: list) -> None:
    response = _sql(client, sql)
    assert response.status_code == 200, response.text
    assert response.json() == {"count": count, "results": results}


def test_php_float_and_slash_encoding_on_the_wire(client: httpx.Client) -> None:
    assert '"f": 2,\n' in _sql(client, "SELECT 2.0 AS f, 'x/y' AS s").text
    assert '"s": "x\\/y"' in _sql(client, "SELECT 'x/y' AS s").text
    assert '"g": 1.0e+25' in _sql(client, "SELECT 1e25 AS g").text


@pytest.mark.parametrize(("sql", "error"), [
    ("SELECT COUNT(*) FROM users_sessions", "Erreur dans la requête : not authorized"),
    ("SELECT id FROM logs", "Erreur dans la requête : access to logs.id is prohibited"),
    ("SELECT * FROM pragma_table_info('users')", "Erreur dans la requête : not authorized"),
    ("BEGIN", "Erreur dans la requête : not authorized"),
    ("CREATE TABLE x (a)", "Erreur dans la requête : not authorized"),
])
def test_sandbox_refusals(client: httpx.Client, sql: str, error: str) -> None:
    response = _sql(client, sql)
    assert (response.status_code, response.json()) == (400, {"error": error})


def test_request_shapes(client: httpx.Client) -> None:
    assert client.head("/api/sql", auth=ADMIN).status_code == 405
    assert client.delete("/api/sql", auth=ADMIN).json() == {"error": "Wrong request method"}
    assert client.post("/api/download", auth=ADMIN).json() == {"error": "Wrong request method"}
    assert client.get("/api/download/nope", auth=ADMIN).json() == {"error": "Unknown path: nope"}
    assert client.post("/api/sql", auth=ADMIN, content=b"  \n ").json() == {"error": "Missing SQL statement"}
    json_ignores_query = client.post("/api/sql?format=csv", auth=ADMIN, json={"sql": "SELECT 1 AS a"})
    assert json_ignores_query.json() == {"count": 1, "results": [{"a": 1}]}
    form = client.post("/api/sql?sql=SELECT%202%20AS%20b", auth=ADMIN, data={"sql": "SELECT 1 AS a"})
    assert form.json()["results"] == [{"a": 1}]
    assert client.get("/api/sql", params={"sql": "SELECT 3 AS c"}, auth=ADMIN).json()["results"] == [{"c": 3}]
    assert "www-authenticate" not in client.post("/api/sql", content=b"SELECT 1").headers


def test_access_levels(client: httpx.Client) -> None:
    reader, writer = AUTH_LABELS["read key"], AUTH_LABELS["write key"]
    assert client.post("/api/user/new", auth=reader, data={"nom": "x"}).status_code == 403
    assert client.post("/api/user/new", auth=writer, data={"nom": "x"}).status_code == 501


def test_mid_stream_error_truncates_a_200(client: httpx.Client) -> None:
    response = _sql(client, "SELECT CASE WHEN id < 3 THEN id ELSE abs(-9223372036854775807 - 1) END AS v"
                            " FROM plugin_pos_tabs ORDER BY id")
    assert response.status_code == 200
    assert response.text.startswith('{\n    "count": 0,\n    "results":\n    [\n        {\n            "v": 1\n')
    assert not response.text.endswith("]\n}")
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_faults_are_served_in_order_then_normal_answers_resume(server, client: httpx.Client) -> None:
    _, app = server
    normal = _sql(client, "SELECT id FROM plugin_pos_sessions").text
    app.faults.add("server_error", status=502)
    app.faults.add("rate_limit", seconds=3)
    app.faults.add("cut_json", times=2)
    app.faults.add("delay", seconds=0.05)
    assert app.faults.pending == 5

    assert _sql(client, "SELECT 1").status_code == 502
    limited = _sql(client, "SELECT 1")
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "3")
    for _ in range(2):
        cut = _sql(client, "SELECT id FROM plugin_pos_sessions")
        assert cut.status_code == 200 and normal.startswith(cut.text) and len(cut.text) < len(normal)
        with pytest.raises(json.JSONDecodeError):
            cut.json()
    assert _sql(client, "SELECT id FROM plugin_pos_sessions").text == normal  # delayed, then normal
    assert app.faults.pending == 0
    assert _sql(client, "SELECT id FROM plugin_pos_sessions").text == normal


def test_close_fault_drops_the_connection(server, client: httpx.Client) -> None:
    _, app = server
    app.faults.add("close")
    with pytest.raises(httpx.TransportError):
        _sql(client, "SELECT 1")
    assert _sql(client, "SELECT 1 AS a").json()["results"] == [{"a": 1}]


def test_fault_plan_rejects_nonsense(server) -> None:
    _, app = server
    with pytest.raises(ValueError):
        app.faults.add("explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        app.faults.add("server_error", status=404)


def test_stats_count_requests_and_body_bytes(server, client: httpx.Client) -> None:
    _, app = server
    app.stats.reset()
    responses = [_sql(client, "SELECT * FROM plugin_pos_tabs_items"), client.get("/api/download", auth=ADMIN),
                 client.get("/api/nope", auth=ADMIN)]
    assert app.stats.requests == 3
    assert app.stats.bytes_sent == sum(len(r.content) for r in responses)


def test_default_credentials_and_missing_database(db_copy: Path, tmp_path: Path) -> None:
    app = create_paheko_app(db_copy)
    user, (secret, level) = next(iter(DEFAULT_CREDENTIALS.items()))
    with LocalServer(app) as local:
        assert httpx.post(local.url + "/api/sql", auth=(user, secret), content=b"SELECT 1", timeout=5).status_code == 200
    assert level == "read"
    with pytest.raises(FileNotFoundError):
        create_paheko_app(tmp_path / "absent.sqlite")
    with pytest.raises(ValueError):
        create_paheko_app(db_copy, {"k": ("s", "superuser")})


def test_command_help_teaches() -> None:
    result = CliRunner().invoke(paheko_command, ["--help"])
    assert result.exit_code == 0
    for option in ("--db", "--host", "--port", "--user", "--password", "--level", "read-only"):
        assert option in result.output


# -- caisse data shapes seen on real tills --------------------------------------------------------------


def test_real_till_shapes_are_served(tmp_path: Path) -> None:
    from receiver.dev.paheko_tills import add_real_till_shapes

    db = tmp_path / "tills.sqlite"
    shutil.copy(FIXTURES / "paheko-caisse.sqlite", db)
    weekend, utc_close = add_real_till_shapes(db)
    with LocalServer(create_paheko_app(db, {"k": ("s", "read")})) as server:
        def sql(query: str) -> list[dict]:
            answer = httpx.post(server.url + "/api/sql", json={"sql": query}, auth=("k", "s"))
            assert answer.status_code == 200, answer.text
            return answer.json()["results"]

        sessions = {r["id"]: r for r in sql("SELECT id, opened, closed, result, nb_tabs FROM plugin_pos_sessions")}
        assert sessions[weekend.id]["opened"][:10] == "2026-11-27" and sessions[weekend.id]["closed"][:10] == "2026-11-30"
        assert sessions[utc_close.id]["closed"] < sessions[utc_close.id]["opened"]  # 1.3.21: closed in UTC
        tabs = [r["id"] for r in sql(f"SELECT id FROM plugin_pos_tabs WHERE session = {weekend.id} ORDER BY id")]
        assert tabs == weekend.tabs and weekend.deleted_tabs[0] not in tabs and tabs[-1] - tabs[0] == len(tabs)
        free = sql(f"SELECT (SELECT SUM(total) FROM plugin_pos_tabs_items WHERE tab = {tabs[0]}) AS total, "
                   f"(SELECT COUNT(*) FROM plugin_pos_tabs_payments WHERE tab = {tabs[0]}) AS payments")[0]
        assert free == {"total": 0, "payments": 0}
        multi = sql(f"SELECT qty, weight FROM plugin_pos_tabs_items WHERE tab = {tabs[1]} AND qty > 2")[0]
        assert multi == {"qty": 4, "weight": 350}  # grams per unit: 1 400 g on the line
        assert sessions[weekend.id]["nb_tabs"] == 3 and sessions[weekend.id]["result"] == 600 + 600 + 2400


def test_command_serves_real_till_shapes_on_a_copy(tmp_path: Path) -> None:
    db = tmp_path / "orig.sqlite"
    shutil.copy(FIXTURES / "paheko-caisse.sqlite", db)
    before = db.read_bytes()
    result = CliRunner().invoke(paheko_command, ["--help"])
    assert "--real-till-shapes" in result.output
    from receiver.dev.paheko_tills import add_real_till_shapes  # the command adds them to a copy only

    copy = tmp_path / "copy.sqlite"
    shutil.copy(db, copy)
    assert [s.id for s in add_real_till_shapes(copy)] == [3, 4]
    assert db.read_bytes() == before
