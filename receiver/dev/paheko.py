"""A local stand-in for Paheko's HTTP API over any Paheko SQLite file, for tests, demos and benches.

It reproduces what Paheko 1.3.22 was *observed* to answer (``tests/fixtures/api-sql-transcripts.json``,
``/work/shared/facts/paheko.md``), not what its documentation promises:

- ``/api/sql`` (and ``/api/sql/…``), GET or POST. The SQL comes from the ``sql`` parameter (query string,
  url-encoded or multipart form, or JSON object when the Content-Type contains ``/json``), else from the
  trimmed raw body — so a url-encoded body without a ``sql=`` field *is* the SQL, ``=`` and ``&`` included,
  and a JSON body without a ``sql`` key is executed as SQL (and fails). ``format=csv|ods|xlsx`` exports a
  file (CSV byte for byte; ODS and XLSX as minimal valid spreadsheets, not Paheko's bytes). Only the first statement runs; there
  is no automatic LIMIT; ``count`` is a separate ``COUNT(*)`` of the query without its last top-level
  LIMIT, 0 when that fails. Results are streamed in Paheko's layout (PHP ``JSON_PRETTY_PRINT``, ``\\uXXXX``
  escapes, duplicate names suffixed with ``_<column index>``); a row PHP cannot encode (invalid UTF-8,
  INF) is written as nothing, which breaks the JSON exactly as Paheko does.
- Sandbox: read-only connection (``mode=ro``) and an authorizer: SELECT and non-recursive WITH only; the
  forbidden tables answer SQLite's ``access to T.C is prohibited``; ``users.password``, ``pgp_key``,
  ``otp_secret``, ``otp_recovery_codes`` read as NULL; ``sqlite_master`` is readable.
- ``GET /api/download``: the database bytes. ``GET /api/user/categories``: categories with member counts.
  ``POST /api/user/new`` checks the access level (403 below ``write``) and then answers 501; the other
  Paheko routes (web, accounting, services, errors) answer 501: they are not emulated.
- Errors as Paheko sends them: compact ``{"error": "…"}``; 405 for methods other than GET/POST/PUT/DELETE,
  401 without Basic credentials (no ``WWW-Authenticate``), 403 for wrong ones, 400 for SQL errors
  (``Erreur dans la requête : <SQLite message>``) and for PUT/DELETE on ``sql``, 404 ``Unknown path``.

Public API:

- :func:`create_paheko_app` ``(db_path, credentials=None) -> PahekoApp``: the WSGI app. ``credentials``
  maps an API key name to ``(secret, level)``, level in ``read``/``write``/``admin``
  (:data:`DEFAULT_CREDENTIALS` when omitted).
- ``app.faults`` (:class:`FaultPlan`): script the next responses, consumed one per request in order:
  ``app.faults.add("delay", seconds=2)`` (wait, then answer normally), ``add("server_error", status=502)``
  (a 5xx HTML page, 503 by default), ``add("rate_limit", seconds=3)`` (429 with ``Retry-After``),
  ``add("cut_json")`` (the real answer, body cut in half: a 200 with truncated JSON), ``add("close")``
  (the connection is closed with no answer; needs Werkzeug's server, e.g. ``LocalServer``); ``times=N``
  repeats a fault; ``app.faults.pending`` and ``app.faults.clear()``.
- ``app.stats`` (:class:`ServerStats`): ``requests`` (requests received, faults included),
  ``bytes_sent`` (response body bytes sent), ``reset()``.
- :data:`paheko_command`: ``paheko-recyclic dev paheko --db FILE`` serves the app until Ctrl-C.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
import socket
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import click
from werkzeug.wrappers import Request

from receiver.dev.server import LocalServer
from receiver.dev.paheko_sheets import ODS_TYPE, XLSX_TYPE, ods_bytes, xlsx_bytes
from receiver.dev.paheko_php import EncodeError, array_key, json_encode, parse_query, php_trim, to_string

__all__ = [
    "ACCESS_LEVELS",
    "DEFAULT_CREDENTIALS",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "PahekoApp",
    "ServerStats",
    "create_paheko_app",
    "paheko_command",
]

ACCESS_LEVELS: dict[str, int] = {"read": 1, "write": 2, "admin": 9}
DEFAULT_CREDENTIALS: dict[str, tuple[str, str]] = {"demo": ("demo", "read")}

FORBIDDEN_TABLES = frozenset({
    "emails_queue", "compromised_passwords_cache", "compromised_passwords_cache_ranges", "api_credentials",
    "plugins_signals", "config", "users_sessions", "logs", "web_suspicious_clients",
})
MASKED_COLUMNS = {"users": frozenset({"password", "pgp_key", "otp_secret", "otp_recovery_codes"})}
ALLOWED_METHODS = ("GET", "POST", "PUT", "DELETE")
JSON_TYPE = "application/json; charset=utf-8"
# The last top-level "LIMIT n [OFFSET m | , m]": nothing after it may close a parenthesis or start another LIMIT.
_LIMIT_CLAUSE = re.compile(r"LIMIT\s+\d+(?:\s*,\s*-?\d+|\s+OFFSET\s+-?\d+)?", re.IGNORECASE)
_LIMIT_OR_PAREN_AFTER = re.compile(r"\)|LIMIT\s+-?\d+", re.IGNORECASE)
_SQL_EDGES = "\n\r\t; "

StartResponse = Callable[..., object]
Environ = dict[str, object]


class ApiError(Exception):
    """An error Paheko reports as ``{"error": message}`` with an HTTP status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.message = message
        self.status = status


# --- fault injection and counters --------------------------------------------------------------------

FaultKind = Literal["delay", "server_error", "rate_limit", "cut_json", "close"]
_FAULT_KINDS = frozenset(FaultKind.__args__)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour; see :class:`FaultPlan`."""

    kind: FaultKind
    seconds: float = 0.0
    status: int = 503


class FaultPlan:
    """The faults the next requests will meet, first added first served; thread-safe."""

    def __init__(self) -> None:
        self._queue: deque[Fault] = deque()
        self._lock = threading.Lock()

    def add(self, kind: FaultKind, times: int = 1, *, seconds: float = 0.0, status: int = 503) -> None:
        """Queue ``kind`` for the next ``times`` requests.

        ``seconds``: the wait of ``delay``, the ``Retry-After`` of ``rate_limit``. ``status``: the 5xx of
        ``server_error``.
        """
        if kind not in _FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(_FAULT_KINDS)}")
        if times < 1 or seconds < 0 or not 500 <= status <= 599:
            raise ValueError("times must be >= 1, seconds >= 0 and status a 5xx")
        with self._lock:
            self._queue.extend([Fault(kind, seconds, status)] * times)

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def take(self) -> Fault | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None


class ServerStats:
    """Requests received and response body bytes sent; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests = 0
        self._bytes_sent = 0

    @property
    def requests(self) -> int:
        with self._lock:
            return self._requests

    @property
    def bytes_sent(self) -> int:
        with self._lock:
            return self._bytes_sent

    def reset(self) -> None:
        with self._lock:
            self._requests = self._bytes_sent = 0

    def count_request(self) -> None:
        with self._lock:
            self._requests += 1

    def count_bytes(self, size: int) -> None:
        with self._lock:
            self._bytes_sent += size


# --- the SQL sandbox -----------------------------------------------------------------------------------

def _authorizer(action: int, arg1: str | None, arg2: str | None, _db: str | None, _source: str | None) -> int:
    if action == sqlite3.SQLITE_SELECT:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_READ:
        if arg1 in FORBIDDEN_TABLES:
            return sqlite3.SQLITE_DENY
        if arg2 in MASKED_COLUMNS.get(arg1 or "", ()):
            return sqlite3.SQLITE_IGNORE
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_FUNCTION:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY  # writes, PRAGMA (and pragma_* functions), ATTACH, recursive CTEs, …


def _first_statement(sql: str) -> str:
    """What ``sqlite3_prepare`` compiles: the text up to the end of the first complete statement."""
    for match in re.finditer(";", sql):
        if sqlite3.complete_statement(sql[: match.end()]):
            return sql[: match.end()]
    return sql


def _without_last_limit(sql: str) -> str:
    if "limit" not in sql.lower():
        return sql
    kept, start = [], 0
    for match in _LIMIT_CLAUSE.finditer(sql):
        if not _LIMIT_OR_PAREN_AFTER.search(sql, match.end()):
            kept.append(sql[start : match.start()])
            start = match.end()
    return "".join(kept) + sql[start:]


class _Query:
    """One ``/api/sql`` request against its own read-only connection."""

    def __init__(self, db_uri: str, sql: str):
        self._conn = sqlite3.connect(db_uri, uri=True, isolation_level=None, check_same_thread=False)
        try:
            self._conn.text_factory = bytes  # PHP hands over TEXT bytes untouched; json_encode judges them
            self._conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # load the schema first
            self._conn.set_authorizer(_authorizer)
            self._sql = sql
            self._cursor = self._execute(php_trim(sql, _SQL_EDGES))
        except BaseException:
            self._conn.close()
            raise
        self.header = [column[0] for column in self._cursor.description or ()]

    def _execute(self, sql: str) -> sqlite3.Cursor:
        try:
            return self._conn.execute(_first_statement(sql))
        except (sqlite3.Error, sqlite3.Warning) as exc:
            raise ApiError(f"Erreur dans la requête : {exc}", 400) from exc

    def count(self) -> int:
        sql = php_trim(_without_last_limit(self._sql), _SQL_EDGES)
        sql = php_trim(php_trim(sql, left=False), ";", left=False)
        try:
            row = self._conn.execute(_first_statement(f"SELECT COUNT(*) FROM ({sql})")).fetchone()
        except (sqlite3.Error, sqlite3.Warning):
            return 0
        return int(row[0]) if row and isinstance(row[0], int) else 0

    def rows(self) -> Iterator[tuple]:
        """The result rows; raises :class:`sqlite3.Error` on a failure in mid-stream."""
        return iter(self._cursor)

    def close(self) -> None:
        self._conn.close()


def _named_row(header: list[str], row: tuple) -> dict:
    """Paheko's row array: a name already set to a non-NULL value gets ``_<column index>`` appended."""
    line: dict = {}
    for index, value in enumerate(row):
        name = header[index]
        while line.get(array_key(name)) is not None:
            name += f"_{index}"
        line[array_key(name)] = value
    return line


def _json_stream(query: _Query) -> Iterator[bytes]:
    try:
        yield f'{{\n    "count": {query.count()},\n    "results":\n    [\n'.encode()
        for index, row in enumerate(query.rows()):
            try:
                encoded = json_encode(_named_row(query.header, row), pretty=True)
            except EncodeError:
                encoded = ""
            separator = ",\n" if index else ""
            yield (separator + "        " + encoded.replace("\n", "\n        ")).encode()
        yield b"\n    ]\n}"
    except (sqlite3.Error, sqlite3.Warning):
        return  # Paheko dies in mid-stream: a 200 whose JSON stops here
    finally:
        query.close()


def _csv_cell(value: object) -> bytes:
    raw = value if isinstance(value, bytes) else to_string(value).encode()  # type: ignore[arg-type]
    return raw.replace(b'"', b'""').replace(b"\r\n", b"\n")


def _csv_stream(query: _Query) -> Iterator[bytes]:
    def line(cells: Iterable[object]) -> bytes:
        return b'"' + b'","'.join(_csv_cell(cell) for cell in cells) + b'"\n'

    try:
        if query.header:
            yield line(query.header)
        for row in query.rows():
            yield line(row)
    except (sqlite3.Error, sqlite3.Warning):
        return
    finally:
        query.close()


# --- the WSGI app --------------------------------------------------------------------------------------

@dataclass
class _Response:
    status: int
    content_type: str
    body: Iterable[bytes]
    headers: tuple[tuple[str, str], ...] = ()


def _attachment(filename: str) -> tuple[tuple[str, str], ...]:
    return (("Content-Disposition", f'attachment; filename="{filename}"'),)


def _error(message: str, status: int) -> _Response:
    return _Response(status, JSON_TYPE, [json_encode({"error": message}).encode()])


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 429: "Too Many Requests", 500: "Internal Server Error",
            501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


class PahekoApp:
    """The WSGI application; build it with :func:`create_paheko_app`."""

    def __init__(self, db_path: Path, credentials: dict[str, tuple[str, str]]):
        for name, (_secret, level) in credentials.items():
            if level not in ACCESS_LEVELS:
                raise ValueError(f"credential {name!r}: level must be one of {sorted(ACCESS_LEVELS)}")
        self.db_path = db_path
        self._db_uri = db_path.resolve().as_uri() + "?mode=ro"
        self._credentials = dict(credentials)
        self.faults = FaultPlan()
        self.stats = ServerStats()

    # WSGI entry point
    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        self.stats.count_request()
        fault = self.faults.take()
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.seconds)
        if fault is not None and fault.kind == "close":
            return self._close_connection(environ)
        if fault is not None and fault.kind == "server_error":
            response = _Response(fault.status, "text/html; charset=utf-8",
                                 [f"<h1>{fault.status} {_REASONS.get(fault.status, 'Server Error')}</h1>".encode()])
        elif fault is not None and fault.kind == "rate_limit":
            response = _Response(429, "text/html; charset=utf-8", [b"<h1>429 Too Many Requests</h1>"],
                                 (("Retry-After", str(round(fault.seconds))),))
        else:
            request = Request(environ)
            try:
                response = self._handle(request)
            except ApiError as exc:
                response = _error(exc.message, exc.status)
        if fault is not None and fault.kind == "cut_json":
            body = b"".join(response.body)
            response.body = [body[: len(body) // 2]]
        headers = [("Content-Type", response.content_type), *response.headers]
        start_response(f"{response.status} {_REASONS.get(response.status, 'Unknown')}", headers)
        return self._counted(response.body)

    def _counted(self, body: Iterable[bytes]) -> Iterator[bytes]:
        iterator = iter(body)
        try:
            for chunk in iterator:
                self.stats.count_bytes(len(chunk))
                yield chunk
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    @staticmethod
    def _close_connection(environ: Environ) -> Iterable[bytes]:
        sock = environ.get("werkzeug.socket")
        if not isinstance(sock, socket.socket):
            raise RuntimeError("the 'close' fault needs Werkzeug's development server (e.g. LocalServer)")
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        raise ConnectionAbortedError("connection closed by the 'close' fault")

    # Paheko's API router
    def _handle(self, request: Request) -> _Response:
        if request.method not in ALLOWED_METHODS:
            raise ApiError(f"Invalid request method: {request.method}", 405)
        if not (request.path == "/api" or request.path.startswith("/api/")):
            raise ApiError("Unknown path", 404)
        access = self._authenticate(request)
        segments = request.path[len("/api"):].strip("/")
        route, _, rest = segments.lstrip("/").partition("/")
        if route == "sql":
            return self._sql(request)
        if route == "download":
            return self._download(request, rest)
        if route == "user":
            return self._user(request, rest, access)
        if route in ("web", "errors", "accounting", "services"):
            raise ApiError(f"Not emulated by the local Paheko stand-in: {request.path}", 501)
        raise ApiError("Unknown path", 404)

    def _authenticate(self, request: Request) -> int:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        try:
            login, colon, secret = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            colon = ""
        if scheme.lower() != "basic" or not colon:
            raise ApiError("No username or password supplied", 401)
        known_secret, level = self._credentials.get(login, ("", ""))
        if not known_secret or not hmac.compare_digest(known_secret.encode(), secret.encode()):
            raise ApiError("Invalid username or password", 403)
        return ACCESS_LEVELS[level]

    @staticmethod
    def _params(request: Request) -> tuple[dict[str, object], str]:
        """Paheko's ``$params`` and its trimmed raw body (``php://input``)."""
        is_multipart = request.mimetype == "multipart/form-data"
        raw = "" if is_multipart else request.get_data().decode("utf-8", "replace")
        query = parse_query(request.environ.get("QUERY_STRING", "") or "")
        if request.method != "POST":
            return dict(query), php_trim(raw)
        if "/json" in request.headers.get("Content-Type", ""):
            try:
                decoded = json.loads(php_trim(raw), parse_constant=_reject_constant)
            except ValueError:
                decoded = None
            return (decoded if isinstance(decoded, dict) else {}), php_trim(raw)
        if is_multipart:
            form: dict[str, str] = {name: values[-1] for name, values in request.form.lists()}
        elif request.mimetype == "application/x-www-form-urlencoded":
            form = parse_query(raw)
        else:
            form = {}
        return {**query, **form}, php_trim(raw)

    def _sql(self, request: Request) -> _Response:
        if request.method not in ("GET", "POST"):
            raise ApiError("Wrong request method", 400)
        params, raw = self._params(request)
        sql = params.get("sql")
        if sql is None:
            sql = raw
        elif isinstance(sql, (dict, list)):
            raise ApiError("The sql parameter must be a string", 500)  # PHP dies with a TypeError here
        elif not isinstance(sql, str):
            sql = to_string(sql)  # type: ignore[arg-type]
        if sql == "":
            raise ApiError("Missing SQL statement", 400)
        query = _Query(self._db_uri, sql)
        export = params.get("format")
        if export in ("ods", "xlsx"):
            try:
                header, rows = query.header, list(query.rows())
            finally:
                query.close()
            if export == "ods":
                return _Response(200, ODS_TYPE, [ods_bytes(header, rows)], _attachment("Recherche.ods"))
            return _Response(200, XLSX_TYPE, [xlsx_bytes(header, rows)], _attachment("Recherche.xlsx"))
        if export == "csv":
            return _Response(200, "application/csv", _csv_stream(query), _attachment("Recherche.csv"))
        return _Response(200, JSON_TYPE, _json_stream(query))

    def _download(self, request: Request, rest: str) -> _Response:
        if request.method != "GET":
            raise ApiError("Wrong request method", 400)
        if rest == "files":
            raise ApiError("Not emulated by the local Paheko stand-in: /api/download/files", 501)
        if rest:
            raise ApiError(f"Unknown path: {rest}", 404)
        conn = sqlite3.connect(self._db_uri, uri=True)
        try:
            data = conn.serialize()  # a consistent snapshot, WAL included, as Paheko's backup dump is
        finally:
            conn.close()
        return _Response(200, "application/octet-stream", [data], (("Content-Length", str(len(data))),))

    def _user(self, request: Request, rest: str, access: int) -> _Response:
        action = rest.partition("/")[0]
        if action == "categories":
            return _Response(200, JSON_TYPE, [json_encode(self._categories(), pretty=True).encode()])
        if action == "new" and access < ACCESS_LEVELS["write"]:
            raise ApiError("You do not have enough rights to make this request", 403)
        if action in ("new", "category", "import") or action.isdigit():
            raise ApiError(f"Not emulated by the local Paheko stand-in: {request.path}", 501)
        raise ApiError("Unknown user action", 404)

    def _categories(self) -> dict[int, dict]:
        conn = sqlite3.connect(self._db_uri, uri=True)
        try:
            cursor = conn.execute(
                "SELECT c.*, (SELECT COUNT(*) FROM users u WHERE u.id_category = c.id) AS count"
                " FROM users_categories c ORDER BY c.name COLLATE NOCASE"
            )
            names = [column[0] for column in cursor.description]
            return {row[0]: dict(zip(names, row)) for row in cursor}
        finally:
            conn.close()


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")  # PHP's json_decode refuses NaN and Infinity


def create_paheko_app(db_path: str | Path, credentials: dict[str, tuple[str, str]] | None = None) -> PahekoApp:
    """A WSGI Paheko stand-in serving ``db_path`` (never modified) to ``credentials``.

    ``credentials`` maps an API key name to ``(secret, level)``, level ``read``, ``write`` or ``admin``.
    """
    path = Path(db_path)
    if not path.is_file():
        raise FileNotFoundError(f"no Paheko database at {path}")
    return PahekoApp(path, DEFAULT_CREDENTIALS if credentials is None else credentials)


# --- command line --------------------------------------------------------------------------------------

@click.command("paheko")
@click.option("--db", "db_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Paheko SQLite file to serve (a backup, or receiver/dev/data/paheko-caisse.sqlite). "
                   "Opened read-only: it is never modified.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8081, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0 picks a free one).")
@click.option("--user", default="demo", show_default=True, help="API key name clients must send.")
@click.option("--password", default="demo", show_default=True, help="API key secret clients must send.")
@click.option("--level", default="read", show_default=True, type=click.Choice(sorted(ACCESS_LEVELS)),
              help="Access level of that key (read is enough for /api/sql and /api/download).")
@click.option("--real-till-shapes", is_flag=True,
              help="Serve a copy of --db with sessions shaped like real tills added: a free tab without payment, "
                   "per-unit weights on multi-quantity lines, a deleted tab, a till left open for days, "
                   "Paheko 1.3.21's closed time in UTC.")
def paheko_command(db_path: Path, host: str, port: int, user: str, password: str, level: str,
                   real_till_shapes: bool) -> None:
    """Serve a local stand-in of Paheko's API (/api/sql, /api/download) over a Paheko SQLite file.

    It answers like Paheko 1.3.22 does (same statuses, errors, JSON layout, sandbox), so the receiver
    can re-read caisse sessions without a real Paheko. Point the receiver's Paheko URL at the printed
    address with the printed credentials. Stop with Ctrl-C.
    """
    if real_till_shapes:
        import shutil
        import tempfile

        from receiver.dev.paheko_tills import add_real_till_shapes

        copy = Path(tempfile.mkdtemp(prefix="paheko-tills-")) / db_path.name
        shutil.copy(db_path, copy)
        for added in add_real_till_shapes(copy):
            click.echo(f"  added session {added.id}: {added.shape}")
        db_path = copy
    app = create_paheko_app(db_path, {user: (password, level)})
    server = LocalServer(app, host, port)
    url = server.url
    click.echo(f"Paheko stand-in serving {db_path} (read-only) at {url}")
    click.echo(f"  API key: {user}  secret: {password}  level: {level}")
    click.echo(f"  try: curl -u {user}:{password} {url}/api/sql -d 'SELECT * FROM plugin_pos_sessions'")
    click.echo("Ctrl-C to stop.")
    server.serve_until_interrupted()
