"""The notification contract, seen from the module: what its templates build is what the receiver takes.

The payload is extracted from the templates themselves (``{{:assign var="payload" …}}`` in
``_notify_session.html``), its SQL run against the real caisse fixture database, and the result
loaded by ``NotificationSchema`` and POSTed to the receiver at the path pinned in
``_contract.html``. Mutating either side makes ``contract_problems`` fail.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from marshmallow import fields

from receiver.intake.schema import NotificationSchema
from receiver.module.lint import STRING_RE, parse_params, split_select, tokenize

from tests.conftest import FIXTURES, WEBHOOK_PASSWORD, WEBHOOK_USER

MODULE = Path(__file__).resolve().parents[1] / "paheko_module"
CAISSE_DB = FIXTURES / "paheko-caisse.sqlite"


class Unsupported(Exception):
    """An expression this test cannot evaluate: extend the evaluator along with the module."""


def _tags(path: Path):
    return tokenize(path.read_text(encoding="utf-8"))


def _assign(path: Path, var: str) -> dict[str, str]:
    """The params of ``{{:assign var="<var>" …}}`` in ``path``."""
    for tag in _tags(path):
        params = parse_params(tag.body)
        if tag.kind == "function" and tag.name == "assign" and params.get("var") in (f'"{var}"', f"'{var}'"):
            del params["var"]
            return params
    raise AssertionError(f'{path.name}: no {{{{:assign var="{var}" …}}}}')


def _assigned_expression(path: Path, name: str) -> str | None:
    for tag in _tags(path):
        if tag.kind == "function" and tag.name == "assign":
            params = parse_params(tag.body)
            if name in params:
                return params[name]
    return None


def _select(path: Path, assign: str) -> tuple[str, dict[str, str]]:
    """SQL and params of the ``{{#select …; assign="<assign>"}}`` in ``path``."""
    for tag in _tags(path):
        if tag.kind == "section" and tag.name == "select":
            sql, rest = split_select(tag.body)
            params = parse_params(rest)
            if params.get("assign") == f'"{assign}"':
                return sql, params
    raise AssertionError(f'{path.name}: no {{{{#select …; assign="{assign}"}}}}')


def _unquote(value: str) -> str:
    if not STRING_RE.fullmatch(value):
        raise Unsupported(value)
    return bytes(value[1:-1], "utf-8").decode("unicode_escape").encode("latin-1").decode("utf-8")


def evaluate(expression: str, env: dict, path: Path) -> object:
    """Brindille expression → value: literals, ``$var.path``, ``|args``; variables may come from an assign."""
    parts = re.findall(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|[^|]+', expression)
    head, modifiers = parts[0], parts[1:]
    if STRING_RE.fullmatch(head):
        value: object = _unquote(head)
    elif re.fullmatch(r"-?\d+", head):
        value = int(head)
    elif head.startswith("$"):
        name, *keys = head[1:].split(".")
        if name not in env:
            source = _assigned_expression(path, name)
            if source is None:
                raise Unsupported(f"${name} is neither a sample nor assigned in {path.name}")
            env[name] = evaluate(source, env, path)
        value = env[name]
        for key in keys:
            value = value[key]
    else:
        raise Unsupported(head)
    for modifier in modifiers:
        name, *args = re.findall(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|[^:]+', modifier)
        if name != "args":
            raise Unsupported(f"|{name}")
        value = str(value) % tuple(evaluate(arg, env, path) for arg in args)
    return value


def _run(db: sqlite3.Connection, sql: str, raw: dict[str, str], bound: dict[str, object]) -> list[dict]:
    for name, text in raw.items():
        sql = sql.replace(f"!{name}", text)
    rows = db.execute("SELECT " + sql.strip(), bound).fetchall()
    return [dict(row) for row in rows]


def module_payload(module: Path, db: sqlite3.Connection, session_id: int) -> dict:
    """The body the module sends for ``session_id`` (first attempt), computed from its templates."""
    contract = {k: _unquote(v) for k, v in _assign(module / "_contract.html", "contract").items()}
    sql, _params = _select(module / "_send.html", "pending.")
    sessions = _run(db, sql, {"columns": contract["session_columns"], "filter": f"s.id = {session_id}", "done": "0"},
                    {"limit": 10})
    assert len(sessions) == 1, f"session {session_id} is not a closed session of the fixture"
    notify = module / "_notify_session.html"
    sql, _params = _select(notify, "payments.")
    payments = _run(db, sql, {}, {"session": session_id})
    env = {"contract": contract, "s": sessions[0], "payments": payments, "attempts": 1}
    payload = {name: evaluate(expr, env, notify) for name, expr in _assign(notify, "payload").items()}
    return json.loads(json.dumps(payload))  # what travels: JSON


def contract_problems(module: Path, schema: type = NotificationSchema, session_id: int = 2) -> list[str]:
    """Why the module's payload and the receiver's schema disagree (empty: they agree)."""
    with sqlite3.connect(f"file:{CAISSE_DB}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        try:
            payload = module_payload(module, db, session_id)
        except (Unsupported, KeyError, sqlite3.Error) as exc:
            return [f"payload cannot be built: {exc!r}"]
    declared = schema().fields
    problems = [f"field {name!r} is not built by the module" for name in declared if name not in payload]
    problems += [f"field {name!r} is unknown to the schema (silently dropped)" for name in payload if name not in declared]
    errors = schema().validate(payload)
    problems += [f"schema refuses {name!r}: {msg}" for name, msg in errors.items()]
    return problems


def test_module_payload_satisfies_the_schema():
    assert contract_problems(MODULE) == []


@pytest.mark.parametrize("session_id", [1, 2])
def test_payload_carries_the_session_figures(session_id):
    """Values read by the module's SQL equal the fixture's sessions (result, nb_tabs, per-method totals)."""
    with sqlite3.connect(f"file:{CAISSE_DB}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        payload = module_payload(MODULE, db, session_id)
        stored = db.execute("SELECT closed, result, nb_tabs FROM plugin_pos_sessions WHERE id = ?", (session_id,)).fetchone()
    loaded = NotificationSchema().load(payload)
    assert loaded["session_id"] == session_id
    assert (payload["closed"], payload["result"], payload["nb_tabs"]) == tuple(stored)
    assert sum(p["total"] for p in loaded["payments"]) == stored["result"]
    assert payload["event"] == "session.closed" and payload["event_id"] == f"{session_id}-1"


def test_payments_match_the_lab_capture():
    """Session 2's per-method totals are those a real module sent in the lab capture."""
    capture = (FIXTURES / "module-request.http").read_text(encoding="utf-8")
    sent = json.loads(capture.split("\n\n", 1)[1])
    with sqlite3.connect(f"file:{CAISSE_DB}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        payload = module_payload(MODULE, db, 2)
    assert payload["payments"] == sent["payments"]
    assert payload["result"] == sent["result"]


def test_receiver_accepts_the_module_calls(client):
    """Notify, status and ping at the paths pinned in _contract.html; the answers carry what the module reads."""
    contract = {k: _unquote(v) for k, v in _assign(MODULE / "_contract.html", "contract").items()}
    auth = {"Authorization": "Basic " + base64.b64encode(f"{WEBHOOK_USER}:{WEBHOOK_PASSWORD}".encode()).decode()}
    with sqlite3.connect(f"file:{CAISSE_DB}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        payload = module_payload(MODULE, db, 2)
    first = client.post("/api/" + contract["notify_path"], json=payload, headers=auth)
    again = client.post("/api/" + contract["notify_path"], json=payload, headers=auth)
    assert 200 <= first.status_code < 300 and 200 <= again.status_code < 300, first.get_json()
    assert first.get_json()["message"] and first.get_json()["state_label"]
    status = client.get("/api/" + contract["status_path"] + "?sessions=2,99", headers=auth)
    sessions = status.get_json()["sessions"]
    assert sessions["2"]["state"] != "unknown" and sessions["99"]["state"] == "unknown"
    assert {"state", "state_label", "reason"} <= set(sessions["2"])
    ping = client.post("/api/" + contract["ping_path"], json=["ping"], headers=auth)
    assert ping.status_code == 200 and ping.get_json()["message"]
    dummy = {"Authorization": "Basic " + base64.b64encode(b"probe:probe").decode()}
    assert client.get("/api/" + contract["probe_path"], headers=dummy).status_code == 200


def test_contract_paths_are_pinned_once():
    """Only _contract.html spells the receiver's paths; every other template goes through $contract."""
    spelled = [p.name for p in MODULE.rglob("*.html") if "paheko/caisse/" in p.read_text(encoding="utf-8")]
    assert spelled == ["_contract.html"]


# Changing one side without the other must fail: mutate a copy of the module, or the schema.

@pytest.fixture
def module_copy(tmp_path) -> Path:
    return Path(shutil.copytree(MODULE, tmp_path / "recyclic"))


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"mutation target {old!r} not found in {path.name}"
    path.write_text(text.replace(old, new), encoding="utf-8")


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("\tnb_tabs=$s.nb_tabs\n", "\n", "'nb_tabs' is not built"),
    ("\tsession_id=$s.id\n", "\tsession=$s.id\n", "'session_id' is not built"),
    ('event=$contract.event', 'event="session.opened"', "schema refuses 'event'"),
    ("SUM(p.amount) AS total", "SUM(p.amount) AS amount", "schema refuses 'payments'"),
])
def test_module_change_breaks_the_contract(module_copy, old, new, expected):
    _edit(module_copy / "_notify_session.html", old, new)
    assert any(expected in problem for problem in contract_problems(module_copy))


def test_contract_file_change_breaks_the_contract(module_copy):
    _edit(module_copy / "_contract.html", "COUNT(*) FROM plugin_pos_tabs AS t WHERE t.session = s.id) AS nb_tabs",
          "COUNT(*) FROM plugin_pos_tabs AS t WHERE t.session = s.id) AS tabs")
    assert contract_problems(module_copy)


def test_schema_change_breaks_the_contract():
    class Extended(NotificationSchema):
        location_id = fields.Integer(required=True)

    assert "field 'location_id' is not built by the module" in contract_problems(MODULE, Extended)


# The pending query: which sessions the module notifies, in which order (facts §5: with
# "s.id"|sql_where the module re-sent every acknowledged session on each home view — 49 notifications
# for 7 sessions — and never reached new ones beyond batch_size).

def _done_subquery(module: Path, table: str) -> str:
    for tag in _tags(module / "_send.html"):
        value = parse_params(tag.body).get("done", "") if tag.kind == "function" and tag.name == "assign" else ""
        if "json_extract" in value:
            return evaluate(value, {"module": {"table": table}}, module / "_send.html")
    raise AssertionError("_send.html: no done= subquery")


def pending_ids(db: sqlite3.Connection, records: dict[int, dict], *, first: int = 1, limit: int = 3) -> list[int]:
    """Session ids _send.html would notify, given the module's records (session id → document)."""
    db.execute("CREATE TABLE IF NOT EXISTS module_data_recyclic (id INTEGER PRIMARY KEY, key TEXT UNIQUE, document TEXT)")
    db.execute("DELETE FROM module_data_recyclic")
    db.execute("INSERT INTO module_data_recyclic (key, document) VALUES ('sending', '{\"left\": 2}')")
    for sid, doc in records.items():
        db.execute("INSERT INTO module_data_recyclic (key, document) VALUES (?, ?)",
                   (f"session_{sid}", json.dumps({"kind": "session", "session_id": sid, **doc})))
    contract = {k: _unquote(v) for k, v in _assign(MODULE / "_contract.html", "contract").items()}
    sql, _params = _select(MODULE / "_send.html", "pending.")
    rows = _run(db, sql, {"columns": contract["session_columns"], "filter": f"s.id >= {first}",
                          "done": _done_subquery(MODULE, "module_data_recyclic")}, {"limit": limit})
    return [row["id"] for row in rows]


@pytest.fixture
def seven_sessions(tmp_path) -> sqlite3.Connection:
    """The caisse fixture with sessions 3..7 added (closed), like the lab's 7 sessions."""
    db = sqlite3.connect(shutil.copy(CAISSE_DB, tmp_path / "caisse.sqlite"))
    db.row_factory = sqlite3.Row
    columns = [r[1] for r in db.execute("PRAGMA table_info(plugin_pos_sessions)")]
    template = dict(db.execute("SELECT * FROM plugin_pos_sessions WHERE id = 2").fetchone())
    for sid in range(3, 8):
        row = {**template, "id": sid}
        db.execute(f"INSERT INTO plugin_pos_sessions ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                   [row[c] for c in columns])
    db.execute("INSERT INTO plugin_pos_sessions (id, opened) VALUES (8, '2026-12-01 10:00:00')")  # still open
    yield db
    db.close()


def test_pending_is_oldest_first_and_skips_acknowledged_and_refused(seven_sessions):
    sent, refused, failed = {"sent": True}, {"sent": False, "rejected": True}, {"sent": False, "error": "x"}
    assert pending_ids(seven_sessions, {}) == [1, 2, 3]
    assert pending_ids(seven_sessions, {1: sent, 2: sent, 3: sent}) == [4, 5, 6]
    assert pending_ids(seven_sessions, {1: sent, 2: refused, 3: failed, 5: sent}) == [3, 4, 6]
    everything = {sid: sent for sid in range(1, 8)}
    assert pending_ids(seven_sessions, everything) == []  # nothing re-sent, the open session 8 neither
    assert pending_ids(seven_sessions, {**everything, 7: failed}, limit=10) == [7]
    assert pending_ids(seven_sessions, {}, first=6) == [6, 7]


def test_n_sessions_over_m_home_views_are_notified_n_times(seven_sessions):
    """Simulates runs of the module: each run notifies its pending batch and records the acknowledgements."""
    records: dict[int, dict] = {}
    notified: list[int] = []
    for _view in range(10):
        for sid in pending_ids(seven_sessions, records):
            notified.append(sid)
            records[sid] = {"sent": True}
    assert sorted(notified) == list(range(1, 8)) and len(notified) == 7
