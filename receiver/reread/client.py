"""An httpx client for one Paheko organisation's ``POST /api/sql``.

Paheko has no bound parameters: SQL is built only from :func:`sql_int` / :func:`sql_text` and fixed text.
Transient failures (connection errors, timeouts, 5xx, 429, a 200 whose JSON does not parse because Paheko
streams it and can cut it) are retried with exponential backoff and jitter; credential (401/403) and SQL (400)
errors are not. Every failure is a :class:`PahekoError` carrying the request (never the API secret).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from receiver.config import PahekoApi
from receiver.outbound import USER_AGENT, retry_after_seconds


@dataclass(frozen=True)
class SqlRequest:
    """What was asked, for error reports and logs: source name, endpoint URL (no credentials), SQL."""

    source: str
    url: str
    sql: str

    def __str__(self) -> str:
        sql = self.sql if len(self.sql) <= 200 else self.sql[:200] + "…"
        return f"source {self.source!r}, POST {self.url}: {sql}"


class PahekoError(Exception):
    """Base of every failure to get an answer from Paheko. ``transient`` says whether trying later may help."""

    transient = False

    def __init__(self, message: str, request: SqlRequest, *, status: int | None = None, attempts: int = 1):
        super().__init__(message)
        self.message = message
        self.request = request
        self.status = status
        self.attempts = attempts

    def __str__(self) -> str:
        return f"{self.message} [{self.request}]"


class PahekoUnavailable(PahekoError):
    """Paheko could not be reached or kept failing (connection, timeout, 5xx, 429) after every retry."""

    transient = True


class PahekoCancelled(PahekoUnavailable):
    """The read was abandoned because the process is stopping (nothing was learnt about Paheko)."""


class PahekoBrokenResponse(PahekoError):
    """Paheko answered 200 with JSON that does not parse, after every retry (cut stream or non-UTF-8 data)."""

    transient = True


class PahekoAuthError(PahekoError):
    """401/403: the API key or secret is wrong, missing or revoked."""


class PahekoSQLError(PahekoError):
    """400: Paheko refused the SQL (unknown table/column, not authorised...). ``paheko_message`` is its text."""

    def __init__(self, message: str, request: SqlRequest, paheko_message: str, **kwargs):
        super().__init__(message, request, **kwargs)
        self.paheko_message = paheko_message


class PahekoProtocolError(PahekoError):
    """The answer is not Paheko's API at all (404, HTML page, unexpected status): the URL is probably wrong."""


@dataclass(frozen=True)
class SqlResult:
    """A decoded ``/api/sql`` answer: ``rows`` as sent, ``count`` as Paheko computed it (see facts §1)."""

    request: SqlRequest
    count: int
    rows: list[dict[str, Any]]
    size: int  # bytes received


def sql_int(value: int) -> str:
    """An integer literal; refuses anything that is not a genuine int (bools included)."""
    if type(value) is not int:
        raise TypeError(f"SQL integer expected, got {type(value).__name__}")
    return str(value)


def sql_text(value: str) -> str:
    """A quoted SQLite text literal (single quotes doubled). For fixed or validated text only."""
    if not isinstance(value, str) or "\x00" in value:
        raise ValueError("SQL text must be a string without NUL characters")
    return "'" + value.replace("'", "''") + "'"


def _public_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class PahekoClient:
    """One source's connection to Paheko: ``with PahekoClient(name, api) as client: client.sql("SELECT 1")``.

    ``retries`` is the number of retries after the first attempt; ``deadline`` bounds the whole call
    (every attempt and every wait; default: the source's ``deadline``). ``cancel``: an event that, once
    set, abandons the call at its next wait (:class:`PahekoCancelled`). ``sleep`` and ``rng`` are
    injectable so tests run without waiting; ``transport`` lets tests plug an httpx transport.
    """

    def __init__(
        self,
        source: str,
        api: PahekoApi,
        *,
        retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        transport: httpx.BaseTransport | None = None,
        deadline: float | None = None,
        cancel: threading.Event | None = None,
    ):
        self.source = source
        self.deadline = deadline if deadline is not None else api.deadline
        self.cancel = cancel
        self._timeouts = (api.connect_timeout, api.read_timeout)
        self.endpoint = api.url.rstrip("/") + "/api/sql"
        self._public_endpoint = _public_url(self.endpoint)
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._http = httpx.Client(
            auth=httpx.BasicAuth(api.api_user, api.api_password.reveal()),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            timeout=httpx.Timeout(api.read_timeout, connect=api.connect_timeout, pool=api.connect_timeout),
            follow_redirects=False,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PahekoClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def request_for(self, sql: str) -> SqlRequest:
        """How a query to this source is described in errors and logs."""
        return SqlRequest(self.source, self._public_endpoint, sql)

    def sql(self, sql: str, *, complete: bool = False) -> SqlResult:
        """Run one SELECT; retry transient failures; raise a :class:`PahekoError` subclass otherwise.

        ``complete``: the query has a single statement and no top-level LIMIT, so Paheko's ``count`` must equal
        the rows received; fewer rows mean rows Paheko could not encode (it writes them as nothing, e.g.
        invalid UTF-8), handled like broken JSON.
        """
        request = self.request_for(sql)
        end = time.monotonic() + self.deadline
        attempt = 0
        while True:
            attempt += 1
            failure, retry_after = self._attempt(request, attempt, complete, end - time.monotonic())
            if isinstance(failure, SqlResult):
                return failure
            delay = self._delay(attempt, retry_after)
            if attempt > self.retries or time.monotonic() + delay >= end:
                failure.attempts = attempt
                raise failure
            if self.cancel is not None and self.cancel.wait(delay):
                raise PahekoCancelled("the worker is stopping; the read will be done again", request,
                                      attempts=attempt)
            if self.cancel is None:
                self._sleep(delay)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        exponential = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        jittered = exponential * (0.5 + self._rng.random() / 2)
        return max(jittered, min(retry_after, self.max_backoff * 4)) if retry_after is not None else jittered

    def _attempt(
        self, request: SqlRequest, attempt: int, complete: bool, left: float
    ) -> tuple[SqlResult | PahekoError, float | None]:
        """One HTTP exchange within ``left`` seconds: a result, or a *transient* error to retry (with
        Retry-After); raises the others."""
        if self.cancel is not None and self.cancel.is_set():
            raise PahekoCancelled("the worker is stopping; the read will be done again", request, attempts=attempt)
        connect, read = self._timeouts
        left = max(left, 0.001)
        timeout = httpx.Timeout(min(read, left), connect=min(connect, left), pool=min(connect, left))
        try:
            response = self._http.post(self.endpoint, json={"sql": request.sql}, timeout=timeout)
        except httpx.TimeoutException as exc:
            return PahekoUnavailable(
                f"Paheko did not answer in time ({type(exc).__name__}); check that the instance is up, "
                "or raise connect_timeout/read_timeout for this source",
                request,
            ), None
        except httpx.TransportError as exc:
            return PahekoUnavailable(
                f"cannot reach Paheko ({type(exc).__name__}: {exc}); check the source's url and the network",
                request,
            ), None
        status = response.status_code
        if status == 200:
            return self._decode(request, response, complete), None
        if status == 429 or status >= 500:
            return PahekoUnavailable(
                f"Paheko answered HTTP {status}; it is overloaded or failing, the read will be retried later",
                request,
                status=status,
            ), retry_after_seconds(response)
        error = _error_text(response)
        if status in (401, 403):
            raise PahekoAuthError(
                f"Paheko refused the API credentials (HTTP {status}: {error or 'no detail'}); check api_user and "
                "api_password for this source against Configuration › Fonctions avancées › API in Paheko",
                request,
                status=status,
                attempts=attempt,
            )
        if status == 400 and error is not None:
            raise PahekoSQLError(
                f"Paheko refused the SQL: {error}; this Paheko or caisse version is not compatible with the query",
                request,
                error,
                status=status,
                attempts=attempt,
            )
        raise PahekoProtocolError(
            f"unexpected answer HTTP {status} from {self._public_endpoint}"
            + (f" ({error})" if error else "")
            + "; check that the source's url is the Paheko address without /api",
            request,
            status=status,
            attempts=attempt,
        )

    def _decode(self, request: SqlRequest, response: httpx.Response, complete: bool) -> SqlResult | PahekoError:
        content_type = response.headers.get("content-type", "")
        if "json" not in content_type:
            raise PahekoProtocolError(
                f"Paheko answered {content_type or 'no content type'} instead of JSON; check that the source's "
                "url points at Paheko itself",
                request,
                status=200,
            )
        body = response.content
        try:
            data = json.loads(body)
            rows = data["results"]
            count = data.get("count", 0)
            if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
                raise TypeError("results is not a list of rows")
            if complete and count != len(rows):
                raise ValueError(f"{len(rows)} rows received, {count} counted")
        except (ValueError, KeyError, TypeError) as exc:
            return PahekoBrokenResponse(
                f"Paheko sent a 200 whose JSON is broken ({exc}): the stream was cut, or a value in the data is "
                "not valid UTF-8, which Paheko cannot encode",
                request,
                status=200,
            )
        return SqlResult(request=request, count=count if isinstance(count, int) else 0, rows=rows, size=len(body))


def _error_text(response: httpx.Response) -> str | None:
    try:
        data = response.json()
    except ValueError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, str) else None
