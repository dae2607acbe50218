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

from receiver.dev.recyclic_redis import VolatileStore
from receiver.dev.recyclic_views import _euros, _iso_z

Profile = Literal["legacy", "v2"]
Clock = Callable[[], datetime]

LOGIN_LIMIT = 10
LOGIN_WINDOW = timedelta(minutes=1)
REFRESH_LIFETIME = timedelta(days=7)
IDEMPOTENCY_TTL = timedelta(hours=24)
IDEMPOTENCY_KEY_MAX = 128
PIN_MAX_FAILURES = 5
PIN_LOCK = timedelta(minutes=15)
PIN_FAILURE_WINDOW = timedelta(seconds=60)
#: v2 asks no variance comment up to this absolute difference in euros (read in v2's code at 000c2d4:
#: CLOSE_VARIANCE_TOLERANCE = 0.05; the facts are silent on it)
VARIANCE_TOLERANCE = 0.05
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
    enable_deferred: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "site_id": self.site_id, "location": self.location,
                "is_active": True, "enable_deferred": self.enable_deferred}


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
    """A real shop's grid, not one shaped after the fixture: sub-categories with near names ("Petit
    électroménager" / "Gros électroménager", "Mobilier" / "Mobilité douce"), slashes, accents, a long name,
    inactive lines; some Paheko names match exactly ("Vêtements", "Livres", "Mobilier"), "Électroménager"
    does not exist at all (facts: "each shop's own: sub-categories with near names")."""
    def cat(name: str, parent: str | None = None, price: int | None = None, max_price: int | None = None,
            active: bool = True) -> Category:
        return Category(_stable_id("category", name), name, parent and _stable_id("category", parent),
                        price, max_price, active)

    deee = "Électrique / électronique (DEEE)"
    return (
        cat("Vêtements"), cat("Vêtements adultes", "Vêtements", 300, 2000),
        cat("Vêtements enfants", "Vêtements", 150, 1000), cat("Chaussures", "Vêtements", 300, 1500),
        cat("Maroquinerie / accessoires", "Vêtements", 100, 3000),
        cat("Livres", None, 100, 500), cat("Livres jeunesse", "Livres", 50, 300),
        cat("BD / mangas", "Livres", 100, 800),
        cat(deee), cat("Petit électroménager", deee, 300, 4000), cat("Gros électroménager", deee, 2000, 25000),
        cat("Informatique", deee, None, 10000), cat("Hi-fi / vidéo / téléphonie", deee, 200, 8000),
        cat("Mobilier"), cat("Petit mobilier", "Mobilier", 500, 4000), cat("Gros mobilier", "Mobilier", 2000, 15000),
        cat("Mobilité douce"), cat("Vélos adultes", "Mobilité douce", 2000, 15000),
        cat("Pièces détachées vélo", "Mobilité douce", 50, 2000),
        cat("Vaisselle"), cat("Vaisselle du quotidien", "Vaisselle", 50, 1000),
        cat("Verrerie / cristallerie", "Vaisselle", 100, 2000),
        cat("Jouets", None, 100, 2000), cat("Jeux de société / puzzles", "Jouets", 100, 1500),
        cat("Linge de maison", None, 200, 1500), cat("Bibelots / décoration", None, 50, 1000),
        cat("Luminaires", None, 200, 4000), cat("Sport / loisirs", None, 100, 5000),
        cat("Bricolage / jardin"), cat("Outillage à main", "Bricolage / jardin", 100, 3000),
        cat("Outillage électroportatif (perceuses, ponceuses)", "Bricolage / jardin", 500, 8000),
        cat("Disques vinyles", None, 200, 1000, active=False), cat("Divers (ancienne grille)", None, active=False),
    )


MAIN_SITE = Site(_stable_id("site", "main"), "Ressourcerie des Quatre Vents", "Lyon")
SECOND_SITE = Site(_stable_id("site", "annexe"), "Boutique solidaire de la Croix-Rousse", "Lyon")
#: The shop's till, in live use: a cashier's session is open on it, with this morning's sales in it.
LIVE_REGISTER = Register(_stable_id("register", "live"), "Caisse 1", MAIN_SITE.id, "Boutique")
#: An idle register of the same site.
MAIN_REGISTER = Register(_stable_id("register", "main"), "Caisse 2", MAIN_SITE.id, "Boutique")
REPLAY_REGISTER = Register(_stable_id("register", "replay"), "Caisse saisie différée", MAIN_SITE.id,
                           "Reprises Paheko", enable_deferred=True)
ANNEXE_REGISTER = Register(_stable_id("register", "annexe"), "Caisse Croix-Rousse", SECOND_SITE.id, "Boutique")
SITES = (MAIN_SITE, SECOND_SITE)
REGISTERS = (LIVE_REGISTER, MAIN_REGISTER, REPLAY_REGISTER, ANNEXE_REGISTER)
CATEGORIES = _seed_categories()
#: The shop's own cashiers: ``marie`` has the live session open on :data:`LIVE_REGISTER`; ``paul`` closed
#: yesterday's. Plain ``user`` role; passwords ``<username>-dev-password``.
SHOP_USERS = (User("marie.caissiere", "marie.caissiere-dev-password", role="user", pin="2580"),
              User("paul.caissier", "paul.caissier-dev-password", role="user", pin="1357"))
#: ``GET /sales/payment-method-options`` of a fresh v2 (seeded by its migrations): code, label, kind (observed
#: on the lab, December 2026).
PAYMENT_METHOD_OPTIONS = (
    ("cash", "Espèces", "cash"), ("check", "Chèque", "bank"), ("card", "Carte", "bank"),
    ("transfer", "Virement", "bank"), ("donation", "Don", "other"),
)
#: A payment row's ``payment_method`` is v2's legacy aggregated column: observed on the lab, a ``transfer``
#: payment reads back "card" (the code sent is in ``payment_method_code``); cash, check and card read back as
#: sent. Facts silent on ``donation``: kept as sent.
LEGACY_PAYMENT_COLUMN = {"transfer": "card"}
#: ``payment_method_id`` of the seeded methods (cash and card observed on the lab; the others follow the pattern)
PAYMENT_METHOD_IDS = {code: str(uuid.UUID(int=int(digit * 32, 16))) for code, digit in
                      (("cash", "1"), ("check", "2"), ("card", "3"), ("transfer", "4"), ("donation", "5"))}


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
    #: the float kilograms as received: sums over them are float sums, as in the real PostgreSQL
    weight_kg: float = 0.0


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
    payment_ids: list[str] = field(default_factory=list)
    #: when the payment rows were written: the server clock, even when the sale is dated back (observed)
    recorded_at: datetime | None = None

    def total_weight(self) -> float:
        """Σ line weights as a float sum (``70.85000000000001`` and the like, as read back from the real one)."""
        return float(sum(line.weight_kg for line in self.items))


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
    # The real columns are floats, accumulated sale by sale: what is read back carries float artefacts.
    total_sales_f: float = 0.0
    total_donations_f: float = 0.0
    current_amount_f: float = 0.0
    closing_amount_f: float | None = None
    variance_f: float | None = None
    report_name: str | None = None
    report_token: str | None = None
    accounting_close_snapshot: dict[str, Any] | None = None
    outbox_item_id: str | None = None
    correlation_id: str | None = None
    accounting_config_revision_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class OutboxItem:
    """A row of v2's ``paheko_outbox_items``: what a close queues for Recyclic's own push to Paheko."""

    id: str
    cash_session_id: str
    site_id: str
    correlation_id: str
    created_at: datetime
    updated_at: datetime
    payload: dict[str, Any]
    outbox_status: str = "pending"
    sync_state_core: str = "a_reessayer"
    rejection_reason: str | None = None
    transitions: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Remembered:
    fingerprint: str
    status: int
    body: dict[str, Any]


def fingerprint(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


#: Keys of a sale's first answer that an idempotent replay does not carry (observed, probe P8b).
REPLAY_DROPPED_KEYS = ("fiscal_branch", "sale_fiscal_year", "current_open_fiscal_year", "effective_business_tag")

#: v2's close checks, in the order observed on the real backend: the facts table gives PIN → empty → variance →
#: mapping, but on the lab an *empty* session closed with an amount other than its float and no comment was
#: refused (400 variance comment) before being deleted — the variance check comes first (as in v2's code), then
#: the empty session is deleted (even without a close mapping), then the close mapping is checked.
CLOSE_CHECKS_V2 = ("pin", "closed", "variance", "empty", "mapping")
#: Legacy 1.3: no step-up PIN and no Paheko close mapping. The facts are silent on the order of the others;
#: kept as the stand-in had it (status, then empty, then variance).
CLOSE_CHECKS_LEGACY = ("closed", "empty", "variance")


class RecyclicStore:
    """Users, tokens, reference data, sessions and sales of one stand-in instance (thread-safe).

    ``redis`` (:class:`~receiver.dev.recyclic_redis.VolatileStore`) holds what the real v2 keeps in Redis:
    idempotency answers and the step-up PIN failure counter and lock. :meth:`flush_redis` loses them.
    """

    def __init__(self, profile: Profile, users: list[User], clock: Clock, token_lifetime: timedelta,
                 paheko_close_mappings: set[str]):
        self.profile = profile
        self.clock = clock
        self.token_lifetime = token_lifetime
        self.lock = threading.RLock()
        self.users: dict[str, User] = {user.id: user for user in users}
        for user in SHOP_USERS:
            self.users.setdefault(user.id, User(user.username, user.password, user.role, user.pin, user.id))
        self.sites = SITES
        self.registers = REGISTERS
        self.categories = CATEGORIES
        self.payment_methods = PAYMENT_METHOD_OPTIONS
        #: Site or register ids for which a "Paheko close mapping" exists (v2 close needs one).
        self.paheko_close_mappings = paheko_close_mappings
        self.sessions: dict[str, CashSession] = {}
        self.sales: dict[str, Sale] = {}
        self.outbox: dict[str, OutboxItem] = {}
        #: report file names written by closes (the real one writes a CSV per closed session)
        self.reports: dict[str, str] = {}
        self.redis = VolatileStore(clock)
        self._access: dict[str, Token] = {}
        self._refresh: dict[str, Token] = {}
        self._logins: dict[str, deque[datetime]] = {}
        self._seed_shop_activity()
        #: what the seed put there (the shop's own sessions and sales), to tell them from what a test sent
        self.seeded = frozenset(self.sessions) | frozenset(self.sales)

    def _seed_shop_activity(self) -> None:
        """What a shop in business already holds: yesterday's closed session and today's open one, both on
        the live register, with sales that are not the forwarder's (no Paheko note)."""
        now = self.clock()
        marie, paul = (self.users[u.id] for u in SHOP_USERS)
        books = next(c.id for c in self.categories if c.name == "Livres")
        kettle = next(c.id for c in self.categories if c.name == "Petit électroménager")
        clothes = next(c.id for c in self.categories if c.name == "Vêtements adultes")

        def till(user: User, opened: datetime, tickets: list[tuple[str, float, float, str]]) -> CashSession:
            session = CashSession(_stable_id("session", f"{user.username}-{opened:%Y%m%d}"), user.id, MAIN_SITE.id,
                                  LIVE_REGISTER.id, 5000, opened, False)
            session.current_amount_f = 50.0
            self.sessions[session.id] = session
            for n, (category, price, kilos, method) in enumerate(tickets, 1):
                at = opened + timedelta(minutes=17 * n)
                sale = Sale(_stable_id("sale", f"{session.id}-{n}"), session.id, user.id, cents(price), 0, method,
                            [(method, cents(price))], None, at, at,
                            [Line(_stable_id("line", f"{session.id}-{n}"), category, 1, grams(kilos), cents(price),
                                  cents(price), None, kilos)], [_stable_id("payment", f"{session.id}-{n}")])
                self.sales[sale.id] = sale
                session.sale_ids.append(sale.id)
                session.total_sales_f += price
                session.current_amount_f += price
            return session

        yesterday = till(paul, now - timedelta(days=1, hours=6), [(books, 2.0, 0.4, "cash"),
                                                                   (kettle, 7.5, 1.85, "card"),
                                                                   (clothes, 4.2, 0.6, "cash")])
        yesterday.status, yesterday.closed_at = "closed", now - timedelta(hours=21)
        yesterday.actual_amount = 6370
        yesterday.closing_amount_f = self.theoretical(yesterday)
        yesterday.variance_f = 63.7 - yesterday.closing_amount_f
        yesterday.variance = 6370 - 6370
        till(marie, now - timedelta(hours=3), [(clothes, 3.0, 0.35, "cash"), (books, 1.5, 0.3, "card")])

    def new_sales(self) -> dict[str, Sale]:
        """Sales created since the seed (what clients sent)."""
        with self.lock:
            return {k: v for k, v in self.sales.items() if k not in self.seeded}

    def new_sessions(self) -> dict[str, CashSession]:
        with self.lock:
            return {k: v for k, v in self.sessions.items() if k not in self.seeded}

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
                raise ApiError(401, "UNAUTHORIZED", "Identifiants invalides ou utilisateur inactif")  # observed
            return self._issue(user)

    def refresh(self, refresh_token: str) -> dict[str, Any]:
        with self.lock:
            token = self._refresh.pop(refresh_token, None)
            if token is None or token.expires_at <= self.clock():
                raise ApiError(401, "UNAUTHORIZED", "Refresh token invalide ou expiré")  # read in v2's code
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
                # facts silent on this text: the stand-in's own French wording
                raise ApiError(401, "UNAUTHORIZED", "Jeton d'authentification invalide ou expiré")
            return self.users[token.user_id]

    def set_pin(self, user: User, pin: str) -> None:
        with self.lock:
            user.pin = pin  # the failure counter and the lock live in Redis and are left as they are

    def check_step_up(self, user: User, pin: str | None) -> None:
        """v2's ``X-Step-Up-Pin``: failures counted in Redis in a 60 s window opened by the first one;
        the 5th within it locks the user for 15 minutes (429, even with the right PIN)."""
        fail_key, lock_key = f"stepup:pin_fail:{user.id}", f"stepup:pin_lockout:{user.id}"
        with self.lock:
            if self.redis.exists(lock_key):
                raise ApiError(429, "STEP_UP_LOCKED", "Trop de tentatives PIN step-up ; réessayez plus tard.",
                               retryable=True)
            if not pin or not pin.strip():
                raise ApiError(403, "STEP_UP_PIN_REQUIRED", "En-tête X-Step-Up-Pin requis pour cette opération.")
            if user.pin is None:
                raise ApiError(403, "STEP_UP_PIN_NOT_CONFIGURED",
                               "Aucun PIN défini pour cet utilisateur ; configurez un PIN avant cette opération.")
            if not secrets.compare_digest(user.pin, pin.strip()):
                failures = self.redis.incr(fail_key)
                if failures == 1:
                    self.redis.expire(fail_key, PIN_FAILURE_WINDOW)
                if failures >= PIN_MAX_FAILURES:
                    self.redis.setex(lock_key, PIN_LOCK, "1")
                raise ApiError(403, "STEP_UP_PIN_INVALID", "PIN step-up invalide.")
            self.redis.delete(fail_key)

    # -- idempotency (in Redis: lost by flush_redis) ------------------------------------------------

    def remembered(self, user: User, scope: str, key: str | None, body: Any) -> Remembered | None:
        """The stored answer for a repeated ``Idempotency-Key``; 409 when the body differs."""
        if not key:
            return None
        with self.lock:
            entry = self.redis.get(self._idempotency_key(user, scope, key))
            if entry is None:
                return None
            if entry.fingerprint != fingerprint(body):
                raise ApiError(409, "IDEMPOTENCY_KEY_CONFLICT",
                               "Idempotency-Key déjà utilisé avec un corps différent.")  # observed
            return entry

    def remember(self, user: User, scope: str, key: str | None, body: Any, status: int,
                 response: dict[str, Any]) -> None:
        if key:
            if scope == "sale":  # the cached answer is taken before the sale is enriched (observed, P8b)
                response = {k: v for k, v in response.items() if k not in REPLAY_DROPPED_KEYS}
            with self.lock:
                self.redis.setex(self._idempotency_key(user, scope, key), IDEMPOTENCY_TTL,
                                 Remembered(fingerprint(body), status, response))

    @staticmethod
    def _idempotency_key(user: User, scope: str, key: str) -> str:
        return f"idempotency:{scope}:{user.id}:{key[:IDEMPOTENCY_KEY_MAX]}"

    def flush_redis(self) -> int:
        """Lose every idempotency key, PIN failure counter and PIN lock (a Redis restart or FLUSHALL)."""
        return self.redis.flush()

    # -- cash sessions --------------------------------------------------------------------------

    def open_session(self, data: dict[str, Any]) -> CashSession:
        with self.lock:
            now = self.clock()
            operator_id, site_id = str(data["operator_id"]), str(data["site_id"])
            register_id = data.get("register_id") and str(data["register_id"])
            opened_at = data.get("opened_at") if self.profile == "v2" else None
            opened_at = opened_at and opened_at.astimezone(UTC)
            if opened_at is not None and opened_at > now:
                raise ApiError(400, "BAD_REQUEST", "La date d'ouverture ne peut pas être dans le futur")  # observed
            if operator_id not in self.users:
                if self.profile == "v2":
                    raise ApiError(404, "NOT_FOUND", "Opérateur non trouvé")  # observed (probe P2)
                raise ApiError(400, "BAD_REQUEST", "Opérateur non trouvé")  # legacy: facts silent on the status
            # facts silent on unknown sites and registers: refused here with a French text of the stand-in's own
            if site_id not in {site.id for site in self.sites}:
                raise ApiError(400, "BAD_REQUEST", "Site non trouvé")
            if register_id and register_id not in {r.id for r in self.registers if r.site_id == site_id}:
                raise ApiError(400, "BAD_REQUEST", "Poste de caisse non trouvé pour ce site")
            if opened_at is None:
                self._refuse_live_opening(operator_id, register_id)
            initial = cents(data["initial_amount"])
            session = CashSession(str(uuid.uuid4()), operator_id, site_id, register_id, initial,
                                  opened_at or now, opened_at is not None)
            session.current_amount_f = float(data["initial_amount"])
            self.sessions[session.id] = session
            return session

    def _refuse_live_opening(self, operator_id: str, register_id: str | None) -> None:
        for other in self.sessions.values():
            if other.status != "open":
                continue
            if other.operator_id == operator_id:  # observed texts
                raise ApiError(400, "BAD_REQUEST", "Une session de caisse est déjà ouverte pour cet opérateur")
            if register_id and other.register_id == register_id:
                raise ApiError(400, "BAD_REQUEST", "Une session est déjà ouverte pour ce poste de caisse")

    def session(self, session_id: str) -> CashSession:
        with self.lock:
            session = self.sessions.get(session_id)
        if session is None:
            raise ApiError(404, "NOT_FOUND", "Session de caisse non trouvée")  # observed (probe P22)
        return session

    def list_sessions(self, query: dict[str, Any]) -> tuple[list[CashSession], int]:
        """``GET /cash-sessions/``: filters, newest opening first, then ``skip``/``limit``.

        Read in v2's code at 000c2d4 (the facts only say the listing exists, with ``status`` and
        ``number_of_sales``): ``status``, ``operator_id``, ``site_id``, ``date_from``/``date_to`` (on
        ``opened_at``; naive = UTC), ``search`` (operator name or session id), ``include_empty`` (default
        **false**: a session with no sale is not listed). There is **no** ``register_id`` filter on the
        route: like any unknown query parameter it is ignored and every register's sessions come back.
        """
        with self.lock:
            sessions = list(self.sessions.values())
            if query.get("status"):
                sessions = [s for s in sessions if s.status == query["status"]]
            for name in ("operator_id", "site_id"):
                if query.get(name):
                    sessions = [s for s in sessions if getattr(s, name) == str(query[name])]
            if query.get("date_from"):
                sessions = [s for s in sessions if s.opened_at >= query["date_from"]]
            if query.get("date_to"):
                sessions = [s for s in sessions if s.opened_at <= query["date_to"]]
            if query.get("search"):
                needle = query["search"].strip().lower()
                sessions = [s for s in sessions if needle in s.id.lower()
                            or needle in self.users[s.operator_id].username.lower()]
            if not query.get("include_empty"):
                sessions = [s for s in sessions if s.total_sales_f > 0 or s.sale_ids]
            sessions.sort(key=lambda s: s.opened_at, reverse=True)
            skip, limit = query.get("skip", 0), query.get("limit", 20)
            return sessions[skip:skip + limit], len(sessions)

    def open_session_of_register(self, register_id: str) -> CashSession | None:
        """``GET /cash-sessions/status/{register_id}`` (read in v2's code): an open session of that register
        opened in the last 90 days (older deferred ones are not counted)."""
        with self.lock:
            horizon = self.clock() - timedelta(days=90)
            return next((s for s in self.sessions.values() if s.register_id == register_id
                         and s.status == "open" and s.opened_at >= horizon), None)

    def close_session(self, session_id: str, data: dict[str, Any], user: User | None = None,
                      pin: str | None = None) -> dict[str, Any]:
        """Close (or delete, when it has no sale) a session, running the profile's checks in order.

        ``user``/``pin`` are the caller and its ``X-Step-Up-Pin`` (v2); without a user the PIN check is
        skipped (tests and the demo close sessions directly)."""
        with self.lock:
            checks = CLOSE_CHECKS_V2 if self.profile == "v2" else CLOSE_CHECKS_LEGACY
            session: CashSession | None = None
            for check in checks:
                if check == "pin":
                    if user is not None:
                        self.check_step_up(user, pin)
                    continue
                session = session or self.session(session_id)
                if check == "empty" and not session.sale_ids and session.status == "open":
                    del self.sessions[session.id]
                    # observed: 200 {"deleted": true}; the other two keys read in v2's code
                    return {"message": "Session vide non enregistrée", "session_id": session.id, "deleted": True}
                if check == "closed" and session.status != "open":
                    raise ApiError(400, "BAD_REQUEST", "La session est déjà fermée")  # observed (probe P13)
                if check == "variance":
                    self._check_variance(session, data)
                if check == "mapping" and not {session.site_id, session.register_id} & self.paheko_close_mappings:
                    # text: facts silent (the real answer carries a policy payload); code observed
                    raise ApiError(409, "PAHEKO_SYNC_FINAL_ACTION_REFUSED",
                                   "Clôture refusée : aucune correspondance de clôture Paheko pour ce site "
                                   "ou ce poste de caisse.")
            assert session is not None
            return self._close(session, data)

    def theoretical(self, session: CashSession) -> float:
        return float(session.initial_amount / 100) + session.total_sales_f + session.total_donations_f

    def _check_variance(self, session: CashSession, data: dict[str, Any]) -> None:
        actual = float(data["actual_amount"])
        theoretical = self.theoretical(session)
        variance = actual - theoretical
        comment = (data.get("variance_comment") or "").strip()
        tolerance = VARIANCE_TOLERANCE if self.profile == "v2" else 0.0  # legacy: facts silent, kept exact
        if abs(variance) > tolerance + 1e-9 and not comment:
            raise ApiError(400, "BAD_REQUEST",  # observed text (probe P11)
                           f"Un commentaire est obligatoire en cas d'écart entre le montant théorique "
                           f"({theoretical:.2f}€) et le montant physique ({actual:.2f}€). Écart: {variance:+.2f}€")

    def _close(self, session: CashSession, data: dict[str, Any]) -> dict[str, Any]:
        now = self.clock()
        actual = float(data["actual_amount"])
        theoretical = self.theoretical(session)
        comment = (data.get("variance_comment") or "").strip() or None
        session.status, session.closed_at = "closed", now
        session.actual_amount = cents(actual)
        session.closing_amount_f, session.variance_f = theoretical, actual - theoretical
        session.variance = session.actual_amount - (session.initial_amount + sum(
            self.sales[s].total_amount for s in session.sale_ids))
        session.variance_comment = comment
        if self.profile == "v2":
            self._close_side_effects(session, now)
        return self.session_json(session, close_answer=True)

    def _close_side_effects(self, session: CashSession, now: datetime) -> None:
        """v2 writes a CSV report, freezes an accounting snapshot and queues a Paheko outbox item (observed; the
        snapshot's layout as seen on the lab, the report file's name is the stand-in's own)."""
        session.correlation_id = str(uuid.uuid4())
        session.report_name = f"cash_session_{session.id}_{now:%Y%m%d_%H%M%S}.csv"
        session.report_token = secrets.token_urlsafe(24)
        self.reports[session.report_name] = session.id
        by_method: dict[str, float] = {}
        for sale_id in session.sale_ids:
            for code, amount in self.sales[sale_id].payments:
                by_method[code] = by_method.get(code, 0.0) + amount / 100
        session.accounting_close_snapshot = {  # the layout observed on the lab (schema_version 2)
            "schema_version": 2, "correction_policy": "append_only_v1", "session_id": session.id,
            "site_id": session.site_id, "register_id": session.register_id,
            "accounting_config_revision_id": session.accounting_config_revision_id,
            "sync_correlation_id": session.correlation_id.replace("-", ""),
            "local_prep_state": "snapshot_persisted_outbox_enqueued_v1", "closed_at_utc": now.isoformat(),
            "totals": {"by_payment_method_signed": by_method, "refunds_current_fiscal_by_payment_method": {},
                       "refunds_prior_closed_fiscal_by_payment_method": {}, "donation_surplus_total": 0.0,
                       "refunds_current_fiscal_total": 0.0, "refunds_prior_closed_fiscal_total": 0.0,
                       "cash_signed_net_from_journal": by_method.get("cash", 0.0),
                       "payment_transaction_line_count": sum(len(self.sales[s].payments) for s in session.sale_ids),
                       "preview_fallback_legacy_totals": False, "cash_disbursement_lines": [],
                       "cash_internal_transfer_lines": []},
            "closing": {"theoretical_cash_amount": session.closing_amount_f,
                        "actual_cash_amount": session.actual_amount / 100, "cash_variance": session.variance_f},
        }
        item = OutboxItem(str(uuid.uuid4()), session.id, session.site_id, session.correlation_id, now, now,
                          {"cash_session_id": session.id, "accounting_close_snapshot": session.accounting_close_snapshot})
        self.outbox[item.id] = item
        session.outbox_item_id = item.id

    # -- Recyclic's Paheko outbox (v2) ---------------------------------------------------------------

    def outbox_items(self, query: dict[str, Any]) -> tuple[list[OutboxItem], int]:
        with self.lock:
            items = sorted(self.outbox.values(), key=lambda i: i.created_at, reverse=True)
            if query.get("cash_session_id"):
                items = [i for i in items if i.cash_session_id == str(query["cash_session_id"])]
            if query.get("outbox_status"):
                items = [i for i in items if i.outbox_status == query["outbox_status"]]
            skip, limit = query.get("skip", 0), query.get("limit", 50)
            return items[skip:skip + limit], len(items)

    def outbox_item(self, item_id: str) -> OutboxItem:
        with self.lock:
            item = self.outbox.get(item_id)
        if item is None:
            raise ApiError(404, "NOT_FOUND", "Élément outbox introuvable")  # observed status; text read in code
        return item

    def reject_outbox_item(self, item_id: str, reason: str, user: User) -> OutboxItem:
        """Observed: 200 and ``failed``/``rejete`` (never pushed); again → 200 unchanged; delivered → 409."""
        with self.lock:
            item = self.outbox_item(item_id)
            if item.outbox_status == "delivered":
                raise ApiError(409, "CONFLICT", "Ligne déjà synchronisée (delivered / resolu) ; rejet impossible "
                                                "sans correction métier.")
            if item.sync_state_core != "rejete":
                now = self.clock()
                item.transitions.append({
                    "transition_name": "reject", "from_sync_state": item.sync_state_core, "to_sync_state": "rejete",
                    "from_outbox_status": item.outbox_status, "to_outbox_status": "failed",
                    "actor_user_id": user.id, "occurred_at": _iso_z(now), "reason": reason})
                item.outbox_status, item.sync_state_core, item.rejection_reason = "failed", "rejete", reason
                item.updated_at = now
            return item

    def deliver_outbox_item(self, item_id: str) -> OutboxItem:
        """What Recyclic's processor does once a Paheko URL is configured: push the item (double booking)."""
        with self.lock:
            item = self.outbox_item(item_id)
            if item.sync_state_core != "rejete":
                item.outbox_status, item.sync_state_core, item.updated_at = "delivered", "resolu", self.clock()
            return item

    # -- sales ----------------------------------------------------------------------------------

    def create_sale(self, user: User, data: dict[str, Any]) -> Sale:
        with self.lock:
            session = self.session(str(data["cash_session_id"]))
            if session.status != "open":
                if self.profile == "v2":  # observed (probe P14)
                    raise ApiError(422, "VALIDATION_ERROR",
                                   f"Impossible de créer une vente pour une session fermée (statut: {session.status})")
                raise ApiError(400, "BAD_REQUEST", "La session de caisse n'est pas ouverte")  # legacy: facts silent
            total = cents(data["total_amount"])
            payments, method = self._payments(data, total)
            lines = [Line(str(uuid.uuid4()), item["category"], item["quantity"], grams(item["weight"]),
                          cents(item["unit_price"]), cents(item["total_price"]), item.get("notes"),
                          float(item["weight"]))
                     for item in data["items"]]
            if any(len(line.category) > CATEGORY_COLUMN_MAX for line in lines):
                raise CategoryTooLong()
            now = self.clock()
            when = session.opened_at if session.opened_at < now - DEFERRED_SALE_AGE else now
            donation = float(data.get("donation") or 0)
            sale = Sale(str(uuid.uuid4()), session.id, user.id, total, cents(donation), method,
                        payments, data.get("note") if self.profile == "v2" else None, when, when, lines,
                        [str(uuid.uuid4()) for _ in payments], now)
            self.sales[sale.id] = sale
            session.sale_ids.append(sale.id)
            session.total_sales_f += float(data["total_amount"]) - donation
            session.total_donations_f += donation
            session.current_amount_f += float(data["total_amount"])
            return sale

    def _payments(self, data: dict[str, Any], total: int) -> tuple[list[tuple[str, int]], str | None]:
        """v2 ``payments[]`` (checked against the options) or the single ``payment_method``.

        Observed on v2: ``payments: []`` with a 0 € total → 200, no payment row; no ``payments`` field → one
        ``cash`` payment of the total (the ``payment_method`` field, default ``cash``, names it). Facts silent
        on a 0 € or negative total without ``payments``: no payment row (a payment amount must be > 0)."""
        if self.profile == "legacy":
            return [], data["payment_method"]
        known = {code for code, _, _ in self.payment_methods}
        if data.get("payments") is not None:
            payments = [(p["payment_method"].lower(), cents(p["amount"])) for p in data["payments"]]
            unknown = sorted({code for code, _ in payments} - known)
            if unknown:
                raise ApiError(400, "BAD_REQUEST", f"Moyen de paiement inconnu : {', '.join(unknown)}")
            if sum(amount for _, amount in payments) != total:
                raise ApiError(400, "BAD_REQUEST",
                               "La somme des paiements doit être égale au montant total de la vente")
            positive = sum(cents(i["total_price"]) for i in data["items"] if cents(i["total_price"]) > 0)
            if any(cents(i["total_price"]) < 0 for i in data["items"]) and total < positive:
                raise ApiError(400, "BAD_REQUEST", "Le montant total doit couvrir les lignes positives")
            return payments, LEGACY_PAYMENT_COLUMN.get(payments[0][0], payments[0][0]) if payments else "cash"
        method = (data.get("payment_method") or "cash").lower()
        if method not in known:
            raise ApiError(400, "BAD_REQUEST", f"Moyen de paiement inconnu : {method}")
        return ([(method, total)] if total > 0 else []), LEGACY_PAYMENT_COLUMN.get(method, method)

    def sale(self, sale_id: str) -> Sale:
        with self.lock:
            sale = self.sales.get(sale_id)
        if sale is None:
            raise ApiError(404, "NOT_FOUND", "Vente non trouvée")  # facts silent on this text
        return sale

    # -- read-back shapes ------------------------------------------------------------------------

    def session_json(self, session: CashSession, *, detail: bool = False, close_answer: bool = False,
                     number_of_sales: bool = False) -> dict[str, Any]:
        from receiver.dev.recyclic_views import session_view

        with self.lock:
            return session_view(self, session, detail=detail, close_answer=close_answer,
                                number_of_sales=number_of_sales)

    def sale_json(self, sale: Sale) -> dict[str, Any]:
        from receiver.dev.recyclic_views import sale_view

        with self.lock:
            return sale_view(self, sale)

    def snapshot(self) -> dict[str, Any]:
        """Everything stored, sales with their items: the ``GET /_stand-in/state`` body."""
        with self.lock:
            return {
                "profile": self.profile,
                "sessions": [self.session_json(session, detail=True) for session in self.sessions.values()],
                "sales": [self.sale_json(sale) for sale in self.sales.values()],
                "paheko_outbox": [{"id": i.id, "cash_session_id": i.cash_session_id, "outbox_status": i.outbox_status,
                                   "sync_state_core": i.sync_state_core} for i in self.outbox.values()],
                "redis_keys": len(self.redis.keys()),
            }

