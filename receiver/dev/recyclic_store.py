"""In-memory state and business rules of the Recyclic stand-in (see /work/shared/facts/recyclic.md).

Everything here is HTTP-free: the routes in :mod:`receiver.dev.recyclic` parse requests, call one
:class:`RecyclicStore` method under its lock and render the result. Money is kept in integer cents
and weights in integer grams; the wire format (float euros, float kilograms) is produced by ``to_json``.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Callable, Literal

Profile = Literal["legacy", "v2"]
Clock = Callable[[], datetime]

LOGIN_LIMIT = 10
LOGIN_WINDOW = timedelta(minutes=1)
REFRESH_LIFETIME = timedelta(days=7)
IDEMPOTENCY_TTL = timedelta(hours=24)
IDEMPOTENCY_KEY_MAX = 128
PIN_MAX_FAILURES = 5
PIN_LOCK = timedelta(minutes=15)
DEFERRED_SALE_AGE = timedelta(hours=24)
CATEGORY_COLUMN_MAX = 50
CASH_ROLES = frozenset({"admin", "super-admin"})
LEGACY_PAYMENT_METHODS = ("cash", "card", "check")


def _stable_id(kind: str, name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"recyclic-stand-in/{kind}/{name}"))


def cents(euros: float | int | Decimal) -> int:
    """Float euros from the wire to integer cents (half-up, like a NUMERIC(10,2) column)."""
    return int((Decimal(str(euros)) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def grams(kilograms: float | int) -> int:
    return int((Decimal(str(kilograms)) * 1000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _euros(amount: int | None) -> float | None:
    return None if amount is None else amount / 100


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


class ApiError(Exception):
    """A refused request: rendered as Recyclic's envelope ``{code, detail, retryable, correlation_id}``."""

    def __init__(self, status: int, code: str, detail: Any, *, retryable: bool = False):
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.retryable = retryable


class LoginRateLimited(Exception):
    """The login limiter's 429, whose body is not the usual envelope."""


class CategoryTooLong(Exception):
    """The real server crashes on a category over 50 characters (500 text/plain, nothing stored)."""


class ManualClock:
    """A clock tests move by hand: ``clock.advance(hours=25)``. Always timezone-aware (UTC)."""

    def __init__(self, start: datetime | None = None):
        self._now = (start or datetime.now(UTC)).astimezone(UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, **delta: float) -> datetime:
        with self._lock:
            self._now += timedelta(**delta)
            return self._now


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class User:
    username: str
    password: str
    role: str = "user"
    pin: str | None = None
    id: str = ""

    def __post_init__(self) -> None:
        self.id = self.id or _stable_id("user", self.username)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "username": self.username, "role": self.role, "is_active": True}


@dataclass(frozen=True)
class Site:
    id: str
    name: str
    city: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "city": self.city, "is_active": True}


@dataclass(frozen=True)
class Register:
    id: str
    name: str
    site_id: str
    location: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "site_id": self.site_id, "location": self.location,
                "is_active": True}


@dataclass(frozen=True)
class Category:
    id: str
    name: str
    parent_id: str | None = None
    price: int | None = None
    max_price: int | None = None
    is_active: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "parent_id": self.parent_id, "price": _euros(self.price),
                "max_price": _euros(self.max_price), "is_active": self.is_active}


def _seed_categories() -> tuple[Category, ...]:
    def cat(name: str, parent: str | None = None, price: int | None = None, max_price: int | None = None,
            active: bool = True) -> Category:
        return Category(_stable_id("category", name), name, parent and _stable_id("category", parent),
                        price, max_price, active)

    return (
        cat("Vêtements"), cat("Vêtements adultes", "Vêtements", 300, 2000),
        cat("Vêtements enfants", "Vêtements", 150, 1000), cat("Chaussures", "Vêtements", 300, 1500),
        cat("Livres", None, 100, 500), cat("Électroménager", None, None, 8000),
        cat("Mobilier"), cat("Petit mobilier", "Mobilier", 500, 4000), cat("Gros mobilier", "Mobilier", 2000, 15000),
        cat("Vaisselle", None, 50, 1000), cat("Jouets", None, 100, 2000), cat("Informatique", None, None, 10000),
        cat("Linge de maison", None, 200, 1500), cat("Bibelots", None, 50, 1000),
        cat("Disques vinyles", None, 200, 1000, active=False),
    )


MAIN_SITE = Site(_stable_id("site", "main"), "Ressourcerie des Quatre Vents", "Lyon")
MAIN_REGISTER = Register(_stable_id("register", "main"), "Caisse 1", MAIN_SITE.id, "Boutique")
REPLAY_REGISTER = Register(_stable_id("register", "replay"), "Caisse saisie différée", MAIN_SITE.id,
                           "Reprises Paheko")
CATEGORIES = _seed_categories()
PAYMENT_METHOD_OPTIONS = (
    ("cash", "Espèces"), ("check", "Chèque"), ("card", "Carte bancaire"), ("transfer", "Virement"),
    ("donation", "Don"),
)


@dataclass
class Token:
    user_id: str
    expires_at: datetime


@dataclass
class Line:
    id: str
    category: str
    quantity: int
    weight_g: int
    unit_price: int
    total_price: int
    notes: str | None

    def to_json(self, sale_id: str) -> dict[str, Any]:
        return {"id": self.id, "sale_id": sale_id, "category": self.category, "quantity": self.quantity,
                "weight": self.weight_g / 1000, "unit_price": _euros(self.unit_price),
                "total_price": _euros(self.total_price), "notes": self.notes}


@dataclass
class Sale:
    id: str
    cash_session_id: str
    operator_id: str
    total_amount: int
    donation: int
    payment_method: str | None
    payments: list[tuple[str, int]]
    note: str | None
    sale_date: datetime
    created_at: datetime
    items: list[Line]

    def to_json(self, *, with_items: bool) -> dict[str, Any]:
        data = {"id": self.id, "cash_session_id": self.cash_session_id, "operator_id": self.operator_id,
                "total_amount": _euros(self.total_amount), "donation": _euros(self.donation),
                "payment_method": self.payment_method,
                "payments": [{"payment_method": code, "amount": _euros(amount)} for code, amount in self.payments],
                "note": self.note, "sale_date": _iso(self.sale_date), "created_at": _iso(self.created_at)}
        if with_items:
            data["items"] = [line.to_json(self.id) for line in self.items]
        return data


@dataclass
class CashSession:
    id: str
    operator_id: str
    site_id: str
    register_id: str | None
    initial_amount: int
    opened_at: datetime
    deferred: bool
    status: str = "open"
    closed_at: datetime | None = None
    actual_amount: int | None = None
    variance: int | None = None
    variance_comment: str | None = None
    sale_ids: list[str] = field(default_factory=list)


@dataclass
class Remembered:
    fingerprint: str
    stored_at: datetime
    status: int
    body: dict[str, Any]


def fingerprint(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class RecyclicStore:
    """Users, tokens, reference data, sessions and sales of one stand-in instance (thread-safe)."""

    def __init__(self, profile: Profile, users: list[User], clock: Clock, token_lifetime: timedelta,
                 paheko_close_mappings: set[str]):
        self.profile = profile
        self.clock = clock
        self.token_lifetime = token_lifetime
        self.lock = threading.RLock()
        self.users: dict[str, User] = {user.id: user for user in users}
        self.sites = (MAIN_SITE,)
        self.registers = (MAIN_REGISTER, REPLAY_REGISTER)
        self.categories = CATEGORIES
        self.payment_methods = PAYMENT_METHOD_OPTIONS
        #: Site or register ids for which a "Paheko close mapping" exists (v2 close needs one).
        self.paheko_close_mappings = paheko_close_mappings
        self.sessions: dict[str, CashSession] = {}
        self.sales: dict[str, Sale] = {}
        self._access: dict[str, Token] = {}
        self._refresh: dict[str, Token] = {}
        self._logins: dict[str, deque[datetime]] = {}
        self._pin_failures: dict[str, int] = {}
        self._pin_locked_until: dict[str, datetime] = {}
        self._idempotency: dict[tuple[str, str, str], Remembered] = {}

    # -- authentication -------------------------------------------------------------------------

    def login(self, client_ip: str, username: str, password: str) -> dict[str, Any]:
        with self.lock:
            now = self.clock()
            window = self._logins.setdefault(client_ip, deque())
            while window and window[0] <= now - LOGIN_WINDOW:
                window.popleft()
            if len(window) >= LOGIN_LIMIT:
                raise LoginRateLimited()
            window.append(now)
            user = next((u for u in self.users.values() if u.username == username), None)
            if user is None or not secrets.compare_digest(user.password, password):
                raise ApiError(401, "UNAUTHORIZED", "Incorrect username or password")
            return self._issue(user)

    def refresh(self, refresh_token: str) -> dict[str, Any]:
        with self.lock:
            token = self._refresh.pop(refresh_token, None)
            if token is None or token.expires_at <= self.clock():
                raise ApiError(401, "UNAUTHORIZED", "Invalid or revoked refresh token")
            return self._issue(self.users[token.user_id])

    def _issue(self, user: User) -> dict[str, Any]:
        now = self.clock()
        access = secrets.token_urlsafe(32)
        self._access[access] = Token(user.id, now + self.token_lifetime)
        body: dict[str, Any] = {"access_token": access}
        if self.profile == "v2":
            refresh = secrets.token_urlsafe(32)
            self._refresh[refresh] = Token(user.id, now + REFRESH_LIFETIME)
            body["refresh_token"] = refresh
        body.update(token_type="bearer", expires_in=int(self.token_lifetime.total_seconds()), user=user.to_json())
        return body

    def authenticate(self, access_token: str | None) -> User:
        with self.lock:
            token = self._access.get(access_token or "")
            if token is None or token.expires_at <= self.clock():
                raise ApiError(401, "UNAUTHORIZED", "Could not validate credentials")
            return self.users[token.user_id]

    def set_pin(self, user: User, pin: str) -> None:
        with self.lock:
            user.pin = pin
            self._pin_failures.pop(user.id, None)
            self._pin_locked_until.pop(user.id, None)

    def check_step_up(self, user: User, pin: str | None) -> None:
        """v2's ``X-Step-Up-Pin`` rule: 5 wrong PINs lock the user for 15 minutes."""
        with self.lock:
            locked_until = self._pin_locked_until.get(user.id)
            if locked_until and locked_until > self.clock():
                raise ApiError(429, "STEP_UP_LOCKED", "Too many wrong PINs; try again later", retryable=True)
            if not pin:
                raise ApiError(403, "STEP_UP_PIN_REQUIRED", "This action requires the X-Step-Up-Pin header")
            if user.pin is None or not secrets.compare_digest(user.pin, pin):
                failures = self._pin_failures.get(user.id, 0) + 1
                self._pin_failures[user.id] = failures
                if failures >= PIN_MAX_FAILURES:
                    self._pin_failures.pop(user.id)
                    self._pin_locked_until[user.id] = self.clock() + PIN_LOCK
                raise ApiError(403, "STEP_UP_PIN_INVALID", "Invalid PIN")
            self._pin_failures.pop(user.id, None)

    # -- idempotency ----------------------------------------------------------------------------

    def remembered(self, user: User, scope: str, key: str | None, body: Any) -> Remembered | None:
        """The stored answer for a repeated ``Idempotency-Key``; 409 when the body differs."""
        if not key:
            return None
        with self.lock:
            entry = self._idempotency.get((user.id, scope, key[:IDEMPOTENCY_KEY_MAX]))
            if entry is None or entry.stored_at <= self.clock() - IDEMPOTENCY_TTL:
                return None
            if entry.fingerprint != fingerprint(body):
                raise ApiError(409, "IDEMPOTENCY_KEY_CONFLICT",
                               "Idempotency-Key already used with a different request body")
            return entry

    def remember(self, user: User, scope: str, key: str | None, body: Any, status: int,
                 response: dict[str, Any]) -> None:
        if key:
            with self.lock:
                self._idempotency[(user.id, scope, key[:IDEMPOTENCY_KEY_MAX])] = Remembered(
                    fingerprint(body), self.clock(), status, response)

    # -- cash sessions --------------------------------------------------------------------------

    def open_session(self, data: dict[str, Any]) -> CashSession:
        with self.lock:
            now = self.clock()
            operator_id, site_id = str(data["operator_id"]), str(data["site_id"])
            register_id = data.get("register_id") and str(data["register_id"])
            if operator_id not in self.users:
                raise ApiError(400, "BAD_REQUEST", "Operator not found")
            if site_id not in {site.id for site in self.sites}:
                raise ApiError(400, "BAD_REQUEST", "Site not found")
            if register_id and register_id not in {r.id for r in self.registers if r.site_id == site_id}:
                raise ApiError(400, "BAD_REQUEST", "Cash register not found for this site")
            opened_at = data.get("opened_at") if self.profile == "v2" else None
            opened_at = opened_at and opened_at.astimezone(UTC)
            if opened_at is not None and opened_at > now:
                raise ApiError(400, "BAD_REQUEST", "opened_at cannot be in the future")
            if opened_at is None:
                self._refuse_live_opening(operator_id, register_id)
            session = CashSession(str(uuid.uuid4()), operator_id, site_id, register_id,
                                  cents(data["initial_amount"]), opened_at or now, opened_at is not None)
            self.sessions[session.id] = session
            return session

    def _refuse_live_opening(self, operator_id: str, register_id: str | None) -> None:
        for other in self.sessions.values():
            if other.status != "open":
                continue
            if other.operator_id == operator_id:
                raise ApiError(400, "BAD_REQUEST", "This operator already has an open cash session")
            if register_id and other.register_id == register_id:
                raise ApiError(400, "BAD_REQUEST", "This cash register already has an open cash session")

    def session(self, session_id: str) -> CashSession:
        with self.lock:
            session = self.sessions.get(session_id)
        if session is None:
            raise ApiError(404, "NOT_FOUND", "Cash session not found")
        return session

    def session_json(self, session: CashSession) -> dict[str, Any]:
        with self.lock:
            sales = [self.sales[sale_id] for sale_id in session.sale_ids]
            return {
                "id": session.id, "operator_id": session.operator_id, "site_id": session.site_id,
                "register_id": session.register_id, "initial_amount": _euros(session.initial_amount),
                "status": session.status, "opened_at": _iso(session.opened_at), "closed_at": _iso(session.closed_at),
                "total_sales": _euros(sum(s.total_amount - s.donation for s in sales)),
                "total_items": len(sales),
                "total_weight_out": sum(line.weight_g for s in sales for line in s.items) / 1000,
                "actual_amount": _euros(session.actual_amount), "variance": _euros(session.variance),
                "variance_comment": session.variance_comment,
                "sales": [sale.to_json(with_items=False) for sale in sales],
            }

    def close_session(self, session_id: str, data: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            session = self.session(session_id)
            if self.profile == "v2" and not {session.site_id, session.register_id} & self.paheko_close_mappings:
                raise ApiError(409, "PAHEKO_SYNC_FINAL_ACTION_REFUSED",
                               "No Paheko close mapping for this site or cash register")
            if session.status != "open":
                raise ApiError(400, "BAD_REQUEST", "Cash session is not open")
            if not session.sale_ids:
                del self.sessions[session.id]
                return {"deleted": True}
            actual = cents(data["actual_amount"])
            expected = session.initial_amount + sum(self.sales[s].total_amount for s in session.sale_ids)
            comment = (data.get("variance_comment") or "").strip() or None
            if actual != expected and comment is None:
                raise ApiError(400, "BAD_REQUEST",
                               "A variance comment is required when the counted amount differs from the expected one")
            session.status, session.closed_at = "closed", self.clock()
            session.actual_amount, session.variance, session.variance_comment = actual, actual - expected, comment
            return self.session_json(session)

    # -- sales ----------------------------------------------------------------------------------

    def create_sale(self, user: User, data: dict[str, Any]) -> Sale:
        with self.lock:
            session = self.session(str(data["cash_session_id"]))
            if session.status != "open":
                raise ApiError(400, "BAD_REQUEST", "Cash session is not open")
            total = cents(data["total_amount"])
            payments, method = self._payments(data, total)
            lines = [Line(str(uuid.uuid4()), item["category"], item["quantity"], grams(item["weight"]),
                          cents(item["unit_price"]), cents(item["total_price"]), item.get("notes"))
                     for item in data["items"]]
            if any(len(line.category) > CATEGORY_COLUMN_MAX for line in lines):
                raise CategoryTooLong()
            now = self.clock()
            when = session.opened_at if session.opened_at < now - DEFERRED_SALE_AGE else now
            sale = Sale(str(uuid.uuid4()), session.id, user.id, total, cents(data.get("donation") or 0), method,
                        payments, data.get("note") if self.profile == "v2" else None, when, when, lines)
            self.sales[sale.id] = sale
            session.sale_ids.append(sale.id)
            return sale

    def _payments(self, data: dict[str, Any], total: int) -> tuple[list[tuple[str, int]], str | None]:
        """v2 ``payments[]`` (checked against the options) or the legacy single ``payment_method``."""
        if self.profile == "legacy":
            return [], data["payment_method"]
        known = {code for code, _ in self.payment_methods}
        if data.get("payments"):
            payments = [(p["payment_method"].lower(), cents(p["amount"])) for p in data["payments"]]
            unknown = sorted({code for code, _ in payments} - known)
            if unknown:
                raise ApiError(400, "BAD_REQUEST", f"Unknown payment method: {', '.join(unknown)}")
            if sum(amount for _, amount in payments) != total:
                raise ApiError(400, "BAD_REQUEST", "The sum of payments must equal total_amount")
            positive = sum(cents(i["total_price"]) for i in data["items"] if cents(i["total_price"]) > 0)
            if any(cents(i["total_price"]) < 0 for i in data["items"]) and total < positive:
                raise ApiError(400, "BAD_REQUEST", "total_amount must cover the positive lines")
            return payments, payments[0][0]
        method = data.get("payment_method")
        if method is None:
            raise ApiError(400, "BAD_REQUEST", "payments is required")
        if method.lower() not in known:
            raise ApiError(400, "BAD_REQUEST", f"Unknown payment method: {method}")
        return [], method.lower()

    def sale(self, sale_id: str) -> Sale:
        with self.lock:
            sale = self.sales.get(sale_id)
        if sale is None:
            raise ApiError(404, "NOT_FOUND", "Sale not found")
        return sale

    def snapshot(self) -> dict[str, Any]:
        """Everything stored, sales with their items: the ``GET /_stand-in/state`` body."""
        with self.lock:
            return {
                "profile": self.profile,
                "sessions": [self.session_json(session) for session in self.sessions.values()],
                "sales": [sale.to_json(with_items=True) for sale in self.sales.values()],
            }
