"""A local stand-in of Recyclic's cashier API, faithful to what a running Recyclic was seen to do.

Recyclic has no ingest endpoint, so the forwarder logs in, opens a cash session, posts one sale per
ticket and may close the session. This Flask app answers those calls over real HTTP with in-memory
state, in two profiles: ``legacy`` (Recyclic 1.3) and ``v2`` (1.4+). Beyond the real behaviour it
offers, for tests and the demo:

- ``app.store`` — the :class:`~receiver.dev.recyclic_store.RecyclicStore` (sessions, sales, settings such
  as ``paheko_close_mappings``); ``GET /_stand-in/state`` serves its snapshot as JSON;
- ``POST /_stand-in/redis/flush`` (or ``app.store.flush_redis()``) — lose what the real v2 keeps in Redis
  (idempotency keys, PIN failure counters and locks), as a Redis restart, flush or eviction does;
- ``POST /_stand-in/paheko-outbox/<id>/deliver`` — push an outbox item as Recyclic's own Paheko processor
  would once it has a Paheko URL (the double booking the forwarder must prevent by rejecting the item);
- ``app.contract_violations`` — one record per request whose body breaks the *published* contract,
  although the lenient server accepted it (the forwarder must keep this list empty);
- ``app.faults`` — scripted failures and a down switch (:mod:`receiver.dev.recyclic_faults`);
- ``clock`` — inject a :class:`~receiver.dev.recyclic_store.ManualClock` to expire tokens, idempotency
  keys, PIN locks and the login rate limit without waiting.

v2 is pinned to the real backend's observed answers by ``tests/test_recyclic_contract.py`` (data in
``tests/fixtures/recyclic-v2/``). The ``legacy`` profile (Recyclic 1.3, read from its source only, never run)
follows the facts where they speak — no refresh token, no back-dating (``opened_at`` ignored), a second open
session per operator or register refused, one ``payment_method`` among cash/card/check and no ``payments``,
no note kept, no step-up PIN, no Paheko close mapping, the 24 h idempotency keys, the login limit, the
500 on a long category. **Where the facts are silent on 1.3** the stand-in keeps its earlier behaviour and
says so next to it: the statuses of a sale into a closed session (400) and of an unknown operator (400), the
read-back shapes (15 session keys, sales with ``cash_session_id``, ``+00:00`` datetimes), the close-check
order, exact variance (no tolerance), the empty-session answer and the session list (offered as in v2).
Its error texts are v2's French ones, unverified for 1.3.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from datetime import timedelta
from typing import Any, Iterable

import click
from flask import Blueprint, Flask, Response, g, jsonify, request
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from receiver.dev.recyclic_faults import Fault, FaultMiddleware, Faults
from receiver.dev.recyclic_schemas import contract_errors, load_lenient, query_values, validation_errors
from receiver.dev.recyclic_views import outbox_json
from receiver.dev.recyclic_store import (
    ANNEXE_REGISTER, CASH_ROLES, CATEGORIES, LIVE_REGISTER, MAIN_REGISTER, MAIN_SITE, REGISTERS, REPLAY_REGISTER,
    SECOND_SITE, SHOP_USERS, SITES, ApiError, CategoryTooLong, Clock, LoginRateLimited, ManualClock, Profile,
    RecyclicStore, User, system_clock,
)

__all__ = [
    "DEFAULT_USERS", "MACHINE_USER", "MAIN_SITE", "SECOND_SITE", "SITES", "MAIN_REGISTER", "LIVE_REGISTER",
    "REPLAY_REGISTER", "ANNEXE_REGISTER", "REGISTERS", "CATEGORIES", "SHOP_USERS",
    "Fault", "ManualClock", "User", "create_recyclic_app", "recyclic_command",
]

#: The machine user the forwarder logs in as (role ``admin``, step-up PIN ``1234``).
MACHINE_USER = User("paheko-bridge", "paheko-bridge-dev-password", role="admin", pin="1234")
#: ``paheko-bridge`` (admin), ``caisse-differee`` (the dedicated replay operator) and ``benevole``
#: (a plain ``user``, refused with 403 on cash endpoints). Passwords are ``<username>-dev-password``.
DEFAULT_USERS: tuple[User, ...] = (
    MACHINE_USER,
    User("caisse-differee", "caisse-differee-dev-password", role="user"),
    User("benevole", "benevole-dev-password", role="user"),
)
CONTEXT_HEADER_PREFIX = "x-recyclique-context-"
LOGIN_RATE_LIMIT_BODY = {"error": "Rate limit exceeded: 10 per 1 minute"}
#: The v2 error envelope's keys after ``correlation_id`` (observed on the lab; the facts wrote "…").
ENVELOPE_POLICY_KEYS = ("policy_reason_code", "policy_version", "cash_session_id", "site_id",
                        "blocking_outbox_item_id", "mapping_resolution_code")


def _close_mapping_id(key: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"close-mapping:{key}"))


def create_recyclic_app(profile: Profile = "v2", *, prefix: str = "/v1", users: Iterable[User] | None = None,
                        clock: Clock | None = None, token_lifetime: timedelta = timedelta(hours=8),
                        paheko_close_mappings: Iterable[str] | None = None) -> Flask:
    """The stand-in WSGI app. ``paheko_close_mappings`` lists the site/register ids whose v2 close is
    accepted (default: the seeded site); ``users`` defaults to :data:`DEFAULT_USERS` (copied)."""
    if profile not in ("legacy", "v2"):
        raise ValueError(f"unknown Recyclic profile {profile!r} (legacy or v2)")
    prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
    app = Flask(__name__)
    app.json.sort_keys = False
    app.json.ensure_ascii = False
    store = RecyclicStore(
        profile, [dataclasses.replace(user) for user in (DEFAULT_USERS if users is None else users)],
        clock or system_clock, token_lifetime,
        {MAIN_SITE.id} if paheko_close_mappings is None else set(paheko_close_mappings))
    faults = Faults(prefix)
    app.store, app.faults, app.contract_violations = store, faults, []
    app.wsgi_app = FaultMiddleware(app.wsgi_app, faults)
    violations_lock = threading.Lock()

    def body(route: str) -> Any:
        """The JSON body, after recording whether it honours the published contract."""
        raw = request.get_json(silent=True)
        problems = contract_errors(route, profile, raw)
        if problems:
            with violations_lock:
                app.contract_violations.append(
                    {"method": request.method, "path": request.path, "route": route, "errors": problems})
            app.logger.warning("contract violation on %s %s: %s", request.method, request.path, problems)
        return raw

    def load(route: str, raw: Any) -> dict[str, Any]:
        if raw is None:
            raise ApiError(422, "VALIDATION_ERROR",
                           [{"type": "json_invalid", "loc": ["body"], "msg": "JSON decode error"}])
        try:
            return load_lenient(route, profile, raw)
        except ValidationError as error:
            raise ApiError(422, "VALIDATION_ERROR", validation_errors(error.normalized_messages())) from None

    def load_query(route: str, args: Any) -> dict[str, Any]:
        try:
            return query_values(route, args)
        except ValidationError as error:
            if route == "outbox-list" and "cash_session_id" in error.normalized_messages():
                raise ApiError(400, "BAD_REQUEST", "cash_session_id invalide") from None  # read in v2's code
            raise ApiError(422, "VALIDATION_ERROR",
                           validation_errors(error.normalized_messages(), ("query",))) from None

    def caller(*, cash: bool = True) -> User:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        user = store.authenticate(token if scheme.lower() == "bearer" else None)
        if cash and user.role not in CASH_ROLES:
            raise ApiError(403, "FORBIDDEN", "Permissions insuffisantes")  # facts silent on this text
        return user

    api = Blueprint("recyclic", __name__, url_prefix=prefix or None)
    site_ids = {site.id for site in store.sites}

    @api.before_request
    def refuse_stale_context() -> None:
        stale = [name for name in request.headers.keys() if name.lower().startswith(CONTEXT_HEADER_PREFIX)]
        if stale:
            raise ApiError(409, "CONTEXT_STALE", "La session caisse annoncée par le client ne correspond plus au "
                                                 "contexte serveur — rafraîchir l'enveloppe puis réessayer.")

    @api.post("/auth/login")
    def login():
        data = load("login", body("login"))
        return jsonify(store.login(request.remote_addr or "", data["username"], data["password"]))

    if profile == "v2":
        @api.post("/auth/refresh")
        def refresh():
            return jsonify(store.refresh(load("refresh", body("refresh"))["refresh_token"]))

        @api.get("/sales/payment-method-options")
        def payment_method_options():
            caller(cash=False)
            return jsonify([{"code": code, "label": label, "kind": kind} for code, label, kind in store.payment_methods])

    @api.put("/users/me/pin")
    def set_pin():
        raw = body("pin")
        user = caller(cash=False)
        store.set_pin(user, load("pin", raw)["pin"])
        return jsonify({"message": "PIN mis à jour"})

    @api.get("/users/")
    def users():
        caller()  # v2: require_admin_role
        return jsonify([user.to_json() for user in store.users.values()])

    @api.get("/categories/")
    def categories():
        caller(cash=False)
        return jsonify([category.to_json() for category in store.categories])

    @api.get("/sites/")
    def sites():
        caller(cash=False)
        return jsonify([site.to_json() for site in store.sites])

    @api.get("/cash-registers/")
    def cash_registers():
        caller(cash=False)
        return jsonify([register.to_json() for register in store.registers])

    @api.post("/cash-sessions/")
    def open_session():
        raw = body("open")
        caller()
        session = store.open_session(load("open", raw))
        return jsonify(store.session_json(session)), 201

    @api.get("/cash-sessions/")
    def list_sessions():
        caller(cash=False)  # v2's code lets a plain user list sessions
        query = load_query("session-list", request.args)
        sessions, total = store.list_sessions(query)
        return jsonify({"data": [store.session_json(s, number_of_sales=True) for s in sessions], "total": total,
                        "skip": query["skip"], "limit": query["limit"]})

    @api.get("/cash-sessions/status/<register_id>")
    def register_status(register_id: str):
        caller(cash=False)
        session = store.open_session_of_register(register_id)
        return jsonify({"is_active": session is not None, "session_id": session.id if session else None})

    @api.get("/cash-sessions/<uuid:session_id>")
    def read_session(session_id: uuid.UUID):
        caller()
        return jsonify(store.session_json(store.session(str(session_id)), detail=True))

    @api.post("/cash-sessions/<uuid:session_id>/close")
    def close_session(session_id: uuid.UUID):
        raw = body("close")
        user = caller()
        data = load("close", raw)
        pin = request.headers.get("X-Step-Up-Pin")
        if profile == "v2":  # the PIN is checked before the idempotency cache is looked at (read in v2's code)
            store.check_step_up(user, pin)
        return idempotent(user, "close", {"session": str(session_id), "body": raw},
                          lambda: (200, store.close_session(str(session_id), data)))

    @api.post("/sales/")
    def create_sale():
        raw = body("sale")
        user = caller()
        data = load("sale", raw)
        return idempotent(user, "sale", raw, lambda: (200, store.sale_json(store.create_sale(user, data))))

    def idempotent(user: User, scope: str, fingerprinted: Any, action) -> tuple[Response, int]:
        key = request.headers.get("Idempotency-Key")
        with store.lock:
            remembered = store.remembered(user, scope, key, fingerprinted)
            if remembered is not None:
                return jsonify(remembered.body), remembered.status
            status, result = action()
            store.remember(user, scope, key, fingerprinted, status, result)
        return jsonify(result), status

    @api.get("/sales/<uuid:sale_id>")
    def read_sale(sale_id: uuid.UUID):
        caller()
        return jsonify(store.sale_json(store.sale(str(sale_id))))

    if profile == "v2":
        @api.get("/admin/paheko-mappings/cash-session-close")
        def close_mappings():
            caller()
            site = request.args.get("site_id")
            register_site = {r.id: r.site_id for r in store.registers}
            rows = [{"id": _close_mapping_id(key), "site_id": key if key in site_ids else register_site.get(key),
                     "register_id": None if key in site_ids else key, "enabled": True,
                     "destination_params": {"id_year": 1, "debit": "530", "credit": "707"}}
                    for key in sorted(store.paheko_close_mappings)]
            rows = [r for r in rows if site is None or r["site_id"] == site]
            return jsonify({"data": rows, "total": len(rows), "skip": 0, "limit": 50})

        @api.get("/admin/paheko-outbox/items")
        def outbox_items():
            caller()
            query = load_query("outbox-list", request.args)
            items, total = store.outbox_items(query)
            return jsonify({"data": [outbox_json(i) for i in items], "total": total, "skip": query["skip"],
                            "limit": query["limit"]})

        @api.get("/admin/paheko-outbox/items/<uuid:item_id>")
        def outbox_item(item_id: uuid.UUID):
            caller()
            return jsonify(outbox_json(store.outbox_item(str(item_id)), detail=True))

        @api.post("/admin/paheko-outbox/items/<uuid:item_id>/reject")
        def reject_outbox_item(item_id: uuid.UUID):
            raw = body("outbox-reject")
            user = caller()
            data = load("outbox-reject", raw)
            return jsonify(outbox_json(store.reject_outbox_item(str(item_id), data["reason"].strip(), user),
                                       detail=True))

    app.register_blueprint(api)

    @app.get("/_stand-in/state")
    def state():
        return jsonify(store.snapshot())

    @app.post("/_stand-in/redis/flush")
    def flush_redis():
        """Lose what the real one keeps in Redis (idempotency keys, PIN failures and locks), as a restart does."""
        return jsonify({"flushed": store.flush_redis()})

    @app.post("/_stand-in/paheko-outbox/<item_id>/deliver")
    def deliver_outbox_item(item_id: str):
        """Push an outbox item as Recyclic's processor does once it has a Paheko URL (a double booking)."""
        return jsonify(outbox_json(store.deliver_outbox_item(item_id), detail=True))

    @app.before_request
    def correlate() -> None:
        g.correlation_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex

    @app.after_request
    def echo_request_id(response: Response) -> Response:
        response.headers["x-request-id"] = g.get("correlation_id") or uuid.uuid4().hex
        return response

    def envelope(status: int, code: str, detail: Any, retryable: bool) -> tuple[Response, int]:
        body = {"code": code, "detail": detail, "retryable": retryable, "correlation_id": g.get("correlation_id")}
        if profile == "v2":  # the real v2's envelope has 11 keys, the policy ones null here (observed on the lab)
            body = {"code": code, "detail": detail, "retryable": retryable, "state": None,
                    "correlation_id": g.get("correlation_id"), **dict.fromkeys(ENVELOPE_POLICY_KEYS)}
        return jsonify(body), status

    @app.errorhandler(ApiError)
    def api_error(error: ApiError):
        return envelope(error.status, error.code, error.detail, error.retryable)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        if error.code and 300 <= error.code < 400:
            return error
        status = error.code or 500
        # observed: 405 → code "HTTP_405", detail "Method Not Allowed" (probe P17); 404 by analogy with the
        # business 404s ("NOT_FOUND"); the detail is the bare status phrase, as Starlette writes it
        code = "NOT_FOUND" if status == 404 else f"HTTP_{status}"
        return envelope(status, code, error.name, status >= 500)

    @app.errorhandler(LoginRateLimited)
    def login_rate_limited(_: LoginRateLimited):
        return jsonify(LOGIN_RATE_LIMIT_BODY), 429

    @app.errorhandler(CategoryTooLong)
    def crash(_: CategoryTooLong):
        # nothing stored; the real one also resets the connection (on the lab the next request on that kept-alive
        # connection failed once): the stand-in's server closes every connection after its answer anyway
        return Response("Internal Server Error", 500, mimetype="text/plain")

    return app


@click.command("recyclic")
@click.option("--profile", type=click.Choice(["v2", "legacy"]), default="v2", show_default=True,
              help="v2 = Recyclic 1.4+ (payments[], refresh tokens, step-up PIN); legacy = Recyclic 1.3.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8082, show_default=True, type=int, help="TCP port (0 = any free port).")
@click.option("--prefix", default="/v1", show_default=True,
              help="API path prefix: /v1 like the backend, /api/v1 like a production proxy.")
def recyclic_command(profile: str, host: str, port: int, prefix: str) -> None:
    """Run a local Recyclic stand-in (in memory, lost on exit) for the forwarder and the demo.

    It answers Recyclic's cashier API as observed on a running Recyclic (login rate limit, step-up PIN,
    idempotency keys, loose validation...). Point the Recyclic sink's base URL at the printed URL,
    log in as the printed machine user, and see what was stored at /_stand-in/state.
    """
    from receiver.dev.server import LocalServer

    app = create_recyclic_app(profile, prefix=prefix)  # type: ignore[arg-type]
    server = LocalServer(app, host, port)
    url = server.url
    click.echo(f"Recyclic stand-in ({profile}) on {url}{prefix}")
    click.echo(f"  machine user: {MACHINE_USER.username} / {MACHINE_USER.password} (role admin, PIN {MACHINE_USER.pin})")
    click.echo(f"  site {MAIN_SITE.id} ({MAIN_SITE.name}); also {SECOND_SITE.name}")
    click.echo(f"  register {LIVE_REGISTER.id} ({LIVE_REGISTER.name}): in live use, a cashier's session is open")
    click.echo(f"  register {MAIN_REGISTER.id} ({MAIN_REGISTER.name}): idle")
    click.echo(f"  replay register {REPLAY_REGISTER.id} ({REPLAY_REGISTER.name})")
    click.echo(f"  replay operator {DEFAULT_USERS[1].id} ({DEFAULT_USERS[1].username})")
    if profile == "v2":
        click.echo(f"  closing accepted: Paheko close mapping set for site {MAIN_SITE.id}")
    click.echo(f"  stored data: {url}/_stand-in/state")
    click.echo(f"  lose idempotency keys and PIN locks (a Redis restart): POST {url}/_stand-in/redis/flush")
    click.echo("  (Ctrl+C to stop)")
    server.serve_until_interrupted()
