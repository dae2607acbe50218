"""An httpx client for Recyclic's cashier API, as the dedicated machine user.

Recyclic has no API keys: the client logs in (``POST /auth/login``), caches the bearer token, refreshes it
under v2 (the refresh token rotates) and logs in again once when a request gets 401. Logins are limited to
10 per minute per client IP, successes included, answered by a 429 without ``Retry-After``: one client is
shared by every thread of a process (one login, re-used until it expires), and logins are paced at
:data:`LOGIN_BUDGET` per minute, counted in a :class:`LoginLog` that the sink keeps in the ledger so that
restarts count too. A 429 with ``Retry-After`` is waited for in place when short, otherwise
raised. Nothing else is retried here: after a 5xx or a broken connection the outcome of a POST is unknown,
and only the caller (the sink, with its ledger) can settle it — except when the request provably never left
(refused connection, DNS, TLS, a failed login before it): such errors carry ``sent = False``. Every request carries its own
``X-Request-Id`` (Recyclic echoes it as ``correlation_id``) and never an ``X-Recyclique-Context-*`` header.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import httpx
from marshmallow import EXCLUDE, Schema, fields, post_load

from receiver.outbound import USER_AGENT, never_sent, retry_after_seconds
from receiver.sinks.recyclic.config import RecyclicSinkConfig

if TYPE_CHECKING:
    from receiver.ledger import Ledger

#: Recyclic refuses the 11th login within a minute from one IP (successes included)…
LOGIN_LIMIT = 10
#: … so this process allows itself fewer, leaving room for people and other programs behind the same IP.
LOGIN_BUDGET = 5
LOGIN_WINDOW = 60.0
#: Refresh a token this many seconds before Recyclic says it expires.
TOKEN_MARGIN = 60.0
#: Recyclic 1.3 has no payment-method listing: its only codes.
LEGACY_PAYMENT_METHODS = (("cash", "Espèces"), ("card", "Carte bancaire"), ("check", "Chèque"))
#: 4xx codes of the step-up PIN check on a v2 close.
PIN_CODES = frozenset({"STEP_UP_PIN_INVALID", "STEP_UP_PIN_REQUIRED", "STEP_UP_LOCKED"})


@dataclass(frozen=True)
class RecyclicRequest:
    """What was asked, for errors and logs (never a body, token, password or PIN)."""

    method: str
    url: str
    request_id: str

    def __str__(self) -> str:
        return f"{self.method} {self.url} (X-Request-Id {self.request_id})"


class RecyclicError(Exception):
    """Base of every failure to get a usable answer from Recyclic; ``transient``: trying later may help."""

    transient = False

    def __init__(self, message: str, request: RecyclicRequest, *, status: int | None = None,
                 code: str | None = None, detail: Any = None, sent: bool = True):
        super().__init__(message)
        self.message = message
        self.request = request
        self.status = status
        self.code = code
        self.detail = detail
        self.sent = sent  # False: the request never left (nothing to settle)

    def __str__(self) -> str:
        return f"{self.message} [{self.request}]"


class RecyclicUnavailable(RecyclicError):
    """No answer (connection, timeout) or a 5xx: for a POST, whether it was applied is unknown."""

    transient = True


class RecyclicRateLimited(RecyclicError):
    """429: try again after ``retry_after`` seconds (``None``: unknown)."""

    transient = True

    def __init__(self, message: str, request: RecyclicRequest, *, retry_after: float | None, **kwargs):
        super().__init__(message, request, **kwargs)
        self.retry_after = retry_after


class RecyclicAuthError(RecyclicError):
    """The machine user cannot log in (wrong credentials) or lacks the ``admin`` role (403)."""


class RecyclicRefused(RecyclicError):
    """Any other 4xx: Recyclic understood and refused; ``code`` and ``detail`` come from its envelope."""


@dataclass(frozen=True)
class Category:
    id: str
    name: str
    parent_id: str | None
    is_active: bool


@dataclass(frozen=True)
class Site:
    id: str
    name: str


@dataclass(frozen=True)
class Register:
    id: str
    name: str
    site_id: str | None
    enable_deferred: bool = False  # v2: the register is kept for deferred entry ("saisie différée")


@dataclass(frozen=True)
class User:
    id: str
    username: str
    role: str | None


@dataclass(frozen=True)
class PaymentMethod:
    code: str
    label: str


class _Reference(Schema):
    class Meta:
        unknown = EXCLUDE

    model: type = object

    @post_load
    def make(self, data, **kwargs):
        return self.model(**data)


class _CategorySchema(_Reference):
    model = Category
    id = fields.String(required=True)
    name = fields.String(required=True)
    parent_id = fields.String(load_default=None, allow_none=True)
    is_active = fields.Boolean(load_default=True)


class _SiteSchema(_Reference):
    model = Site
    id = fields.String(required=True)
    name = fields.String(required=True)


class _RegisterSchema(_Reference):
    model = Register
    id = fields.String(required=True)
    name = fields.String(required=True)
    site_id = fields.String(load_default=None, allow_none=True)
    enable_deferred = fields.Boolean(load_default=False, allow_none=True)

    @post_load
    def make(self, data, **kwargs):
        return Register(**{**data, "enable_deferred": bool(data["enable_deferred"])})


class _UserSchema(_Reference):
    model = User
    id = fields.String(required=True)
    username = fields.String(required=True)
    role = fields.String(load_default=None, allow_none=True)


class _PaymentMethodSchema(_Reference):
    model = PaymentMethod
    code = fields.String(required=True)
    label = fields.String(load_default="")


class LoginLog(Protocol):
    """When this client's logins happened (wall-clock seconds), kept where restarts find them."""

    def load(self) -> list[float]: ...

    def save(self, times: list[float]) -> None: ...


class MemoryLoginLog:
    def __init__(self) -> None:
        self.times: list[float] = []

    def load(self) -> list[float]:
        return list(self.times)

    def save(self, times: list[float]) -> None:
        self.times = list(times)


class LedgerLoginLog:
    """Login times in the ledger's named values, per Recyclic user and host (the limit is per IP, but one
    receiver host is one IP). Processes sharing a ledger share the count; two logging in at the very same
    instant may both pass, which :data:`LOGIN_BUDGET`'s margin under Recyclic's limit absorbs."""

    def __init__(self, ledger: Ledger, key: str):
        self.ledger = ledger
        self.key = key

    def load(self) -> list[float]:
        try:
            return [float(t) for t in json.loads(self.ledger.get_value(self.key) or "[]")]
        except (ValueError, TypeError):
            return []

    def save(self, times: list[float]) -> None:
        self.ledger.set_value(self.key, json.dumps(times))


class _TokenSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    access_token = fields.String(required=True)
    refresh_token = fields.String(load_default=None, allow_none=True)
    expires_in = fields.Float(load_default=None, allow_none=True)


class RecyclicClient:
    """One sink's connection to Recyclic: ``with RecyclicClient(config) as client: client.sites()``.
    Thread-safe: threads share its token (one logs in, the others wait for it and re-use it).

    ``sleep`` and ``clock`` (wall-clock seconds: login times outlive the process) are injectable so tests
    never wait; ``transport`` lets tests plug an httpx transport; ``logins`` keeps the login times.
    """

    def __init__(self, config: RecyclicSinkConfig, *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time, transport: httpx.BaseTransport | None = None,
                 max_rate_limit_retries: int = 3, logins: LoginLog | None = None):
        self.config = config
        self._sleep = sleep
        self._clock = clock
        self._max_rate_limit_retries = max_rate_limit_retries
        self._logins = logins or MemoryLoginLog()
        self._token_lock = threading.Lock()
        self._http = httpx.Client(
            base_url=config.url + "/",
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            timeout=httpx.Timeout(config.read_timeout, connect=config.connect_timeout, pool=config.connect_timeout),
            follow_redirects=False,
            transport=transport,
        )
        self._access: str | None = None
        self._refresh: str | None = None
        self._expires_at: float | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RecyclicClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- reference data (for ``mapping suggest`` and checks) -------------------------------------

    def categories(self) -> list[Category]:
        return _CategorySchema(many=True).load(self.get("categories/"))

    def sites(self) -> list[Site]:
        return _SiteSchema(many=True).load(self.get("sites/"))

    def registers(self) -> list[Register]:
        return _RegisterSchema(many=True).load(self.get("cash-registers/"))

    def users(self) -> list[User]:
        """Recyclic's users (admin route; up to 1000)."""
        return _UserSchema(many=True).load(self.get("users/?limit=1000"))

    def open_session_of_register(self, register_id: str) -> str | None:
        """The open session on a register, if any (v2 ``cash-sessions/status/{id}`` shows empty ones too)."""
        data = self.get(f"cash-sessions/status/{register_id}")
        return str(data["session_id"]) if isinstance(data, dict) and data.get("is_active") else None

    def close_mappings(self, site_id: str) -> list[dict[str, Any]]:
        """Recyclic's Paheko close mappings of a site (v2; admin route): a v2 close needs one enabled."""
        page = self.get(f"admin/paheko-mappings/cash-session-close?site_id={site_id}&limit=200")
        return [m for m in (page.get("data", []) if isinstance(page, dict) else []) if isinstance(m, dict)]

    def payment_methods(self) -> list[PaymentMethod]:
        """v2's options; Recyclic 1.3 has no such route (404) and only knows cash, card and check."""
        try:
            return _PaymentMethodSchema(many=True).load(self.get("sales/payment-method-options"))
        except RecyclicRefused as exc:
            if exc.status != 404:
                raise
            return [PaymentMethod(code, label) for code, label in LEGACY_PAYMENT_METHODS]

    # -- requests ---------------------------------------------------------------------------------

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: dict[str, Any], *, headers: dict[str, str] | None = None) -> Any:
        return self.request("POST", path, json=body, headers=headers)

    def request(self, method: str, path: str, *, json: Any = None, headers: dict[str, str] | None = None,
                params: dict[str, Any] | None = None) -> Any:
        """An authenticated request (``path`` relative to the base URL); the decoded JSON answer.

        Raises :class:`RecyclicError` subclasses. 401 → log in again, once; a short ``Retry-After`` is
        waited for (up to ``max_retry_wait`` seconds, a few times).
        """
        relogged = False
        rate_limited = 0
        while True:
            token = self.token()
            try:
                return self._exchange(method, path, json, {**(headers or {}), "Authorization": f"Bearer {token}"},
                                      params)
            except RecyclicAuthError as exc:
                if exc.status != 401 or relogged:
                    raise
                relogged = True
                self._forget(token)  # refresh (v2) or log in again, once
            except RecyclicRateLimited as exc:
                rate_limited += 1
                wait = exc.retry_after
                if (wait is None or wait > self.config.max_retry_wait
                        or rate_limited > self._max_rate_limit_retries):
                    raise
                self._sleep(wait)

    def _exchange(self, method: str, path: str, json: Any, headers: dict[str, str],
                  params: dict[str, Any] | None = None) -> Any:
        request = RecyclicRequest(method, self.config.url + "/" + path, uuid.uuid4().hex)
        try:
            response = self._http.request(method, path, json=json, params=params,
                                          headers={**headers, "X-Request-Id": request.request_id})
        except httpx.HTTPError as exc:
            if never_sent(exc):
                raise RecyclicUnavailable(f"cannot reach Recyclic ({type(exc).__name__}: {exc}): nothing was sent",
                                          request, sent=False) from None
            if isinstance(exc, httpx.TimeoutException):
                raise RecyclicUnavailable(f"Recyclic did not answer in time ({type(exc).__name__})", request) from None
            raise RecyclicUnavailable(f"cannot reach Recyclic ({type(exc).__name__}: {exc})", request) from None
        if response.is_success:
            try:
                return response.json()
            except ValueError:
                raise RecyclicUnavailable(f"Recyclic answered {response.status_code} with a body that is not JSON",
                                          request, status=response.status_code) from None
        raise _error(response, request)

    # -- tokens -----------------------------------------------------------------------------------

    def token(self) -> str:
        """A valid access token: the cached one, else refreshed (v2), else a new login within the budget.

        Any failure here happened before the caller's request left: it is raised with ``sent = False``.
        """
        with self._token_lock:
            if self._access is not None and (self._expires_at is None or self._clock() < self._expires_at):
                return self._access
            try:
                if self._refresh is not None:
                    try:
                        return self._authenticate("auth/refresh", {"refresh_token": self._refresh})
                    except RecyclicAuthError:  # revoked or expired refresh token: log in
                        self._refresh = None
                return self._login()
            except RecyclicError as exc:
                exc.sent = False
                raise

    def _forget(self, token: str) -> None:
        """Drop a token Recyclic refused (unless another thread already replaced it)."""
        with self._token_lock:
            if self._access == token:
                self._access = None

    def _login(self) -> str:
        now = self._clock()
        recent = [t for t in self._logins.load() if now - LOGIN_WINDOW < t <= now]
        if len(recent) >= LOGIN_BUDGET:
            wait = min(recent) + LOGIN_WINDOW - now
            raise RecyclicRateLimited(
                f"{len(recent)} logins to Recyclic in the last minute already (this receiver allows itself "
                f"{LOGIN_BUDGET}, Recyclic {LOGIN_LIMIT} per IP): not logging in again for {wait:.0f} s",
                RecyclicRequest("POST", self.config.url + "/auth/login", "-"), retry_after=wait, sent=False)
        self._logins.save([*recent, now])
        return self._authenticate("auth/login", {"username": self.config.username,
                                                 "password": self.config.password.reveal()})

    def _authenticate(self, path: str, body: dict[str, str]) -> str:
        data = self._exchange("POST", path, body, {})
        tokens = _TokenSchema().load(data if isinstance(data, dict) else {})
        self._access = tokens["access_token"]
        self._refresh = tokens["refresh_token"]
        lifetime = tokens["expires_in"]
        self._expires_at = None if lifetime is None else self._clock() + max(lifetime - TOKEN_MARGIN, 0.0)
        return self._access


def _error(response: httpx.Response, request: RecyclicRequest) -> RecyclicError:
    """The typed error for a non-2xx answer, with Recyclic's ``code`` and ``detail`` when it sent them."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    envelope = body if isinstance(body, dict) else {}
    code = envelope.get("code") if isinstance(envelope.get("code"), str) else None
    detail = envelope.get("detail", envelope.get("error"))
    if detail is None and body is None:
        detail = response.text[:200]
    message = f"Recyclic answered {status}" + (f" {code}" if code else "") + (f": {detail}" if detail else "")
    kwargs = dict(status=status, code=code, detail=detail)
    if status == 429 and code not in PIN_CODES:
        # The login limiter sends no Retry-After: a minute is its window.
        after = retry_after_seconds(response)
        if after is None and request.url.endswith("/auth/login"):
            after = LOGIN_WINDOW
        return RecyclicRateLimited(message, request, retry_after=after, **kwargs)
    if status >= 500:
        return RecyclicUnavailable(message, request, **kwargs)
    if status == 401 or (status == 403 and code not in PIN_CODES):
        return RecyclicAuthError(message, request, **kwargs)
    return RecyclicRefused(message, request, **kwargs)
