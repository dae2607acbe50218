"""The notification endpoint the Paheko module calls through ``{{:api}}``.

Routes (all under ``/api/``, each answering with and without a trailing slash, never redirecting):

- ``POST paheko/caisse/v1/session-closed`` — a caisse session closed (``paheko/caisse/session-closed``,
  the path of the first lab capture, is the same contract, version 1);
- ``GET|POST paheko/caisse/v1/status?sessions=1,2,3`` — pipeline state of those sessions;
- ``GET|POST paheko/caisse/v1/ping`` — "Tester la connexion" in the module's settings;
- ``GET paheko/caisse/v1/hello`` — no credentials checked: the module calls it first with dummy
  credentials, so that when Paheko refuses the address (a template error that prints the call's
  parameters) the page shows the dummy ones, never the real password.

Every answer is JSON; every message is French, because the Paheko admin reads it.
"""

from __future__ import annotations

import json
import re
import time

from flask import Blueprint, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from receiver.intake.auth import AuthFailure, authenticate, parse_authorization
from receiver.intake.schema import INT64_MAX, load_notification, summary_of
from receiver.intake.status import notification_message, ping_message, session_view
from receiver.services import services

bp = Blueprint("intake", __name__, url_prefix="/api/paheko/caisse")

STATUS_MAX_SESSIONS = 200
#: A notification is 3 levels deep; anything much deeper is not one (and must not reach a recursion limit).
MAX_JSON_DEPTH = 32
_SESSION_ID_TEXT = re.compile(r"^\s*[0-9]{1,19}\s*$")


def route(*names: str, methods: list[str]):
    """Register each path with and without its trailing slash: Paheko's client breaks on redirects."""

    def register(view):
        for name in names:
            for rule in (f"/{name}", f"/{name}/"):
                bp.add_url_rule(rule, view_func=view, methods=methods, strict_slashes=False)
        return view

    return register


def error(status: int, message: str, **headers) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    response.headers.update(headers)
    return response


@bp.before_request
def authenticate_module():
    g.started = time.perf_counter()
    if request.endpoint == f"{bp.name}.hello":
        return None  # answers anyone, says nothing, counts no authentication failure
    svc = services()
    try:
        credentials = parse_authorization(request.headers.get("Authorization"))
        g.source = authenticate(svc.config, svc.throttle, request.remote_addr or "?", credentials)
    except AuthFailure as failure:
        svc.metrics.auth_failures.labels(status=str(failure.status)).inc()
        headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after else {}
        return error(failure.status, failure.message, **headers)


def _too_deep(value: object, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when containers nest deeper than ``limit`` (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return False


def _json_body() -> tuple[object | None, Response | None]:
    if request.mimetype != "application/json":
        return None, error(415, "Type de contenu refusé : le corps doit être envoyé en application/json.")
    raw = request.get_data(cache=True)  # over max_body_bytes (chunked too): 413 from the error handler
    if not raw.strip():
        return None, error(400, "Notification refusée — le corps de la requête est vide.")
    try:
        body = json.loads(raw.decode("utf-8"))  # UTF-8 only: it is what the ledger stores verbatim
    except (ValueError, UnicodeDecodeError):
        return None, error(400, "Notification refusée — le corps n'est pas du JSON valide (UTF-8).")
    except RecursionError:  # deeper than Python parses, so deeper than the limit
        body = None
        too_deep = True
    else:
        too_deep = _too_deep(body)
    if too_deep:
        return None, error(400, f"Notification refusée — le JSON est imbriqué sur plus de {MAX_JSON_DEPTH} niveaux.")
    return body, None


def _session_ids(raw: object) -> list[int] | None:
    """``1,2,3`` or ``[1, "2", 3]`` as ids that fit Paheko's INTEGER column; ``None`` when malformed."""
    if isinstance(raw, list):
        parts = raw
    else:  # the query string form; empty pieces ("1,,2", a trailing comma) are skipped
        parts = [part for part in str(raw or "").split(",") if part.strip()]
    ids = []
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool):
            ids.append(part)
        elif isinstance(part, str) and _SESSION_ID_TEXT.match(part):
            ids.append(int(part))
        else:
            return None
    return ids


@route("session-closed", "v1/session-closed", methods=["POST"])
def session_closed():
    """Record a closed session in the ledger, then acknowledge it (201 new, 200 already known)."""
    with services().ledger.answering():
        return _record_session_closed()


def _record_session_closed():
    svc = services()
    body, problem = _json_body()
    if problem:
        svc.metrics.rejected(g.source.name, "content_type" if problem.status_code == 415 else "body")
        return problem
    try:
        notification = load_notification(body)
    except ValueError as exc:
        svc.metrics.rejected(g.source.name, "invalid_field")
        return error(400, str(exc))
    recorded = svc.ledger.record_notification(
        g.source.name,
        notification["session_id"],
        summary_of(notification),
        origin="module",
        raw_body=request.get_data(as_text=True),
        event_id=notification["event_id"],
        remote_addr=request.remote_addr,
    )
    svc.metrics.notifications.labels(source=g.source.name, outcome=recorded.outcome).inc()
    entry = recorded.entry
    message = notification_message(recorded.outcome, entry.session_id)
    current_app.logger.info(
        "notification accepted",
        extra={"event": "notification", "source": g.source.name, "session_id": entry.session_id,
               "outcome": recorded.outcome, "state": entry.state.value,
               "duration_ms": round((time.perf_counter() - g.started) * 1000, 2)},
    )
    payload = {
        "status": "accepted",
        "new": recorded.is_new,
        "changed": recorded.outcome == "changed",
        "outcome": recorded.outcome,
        "source": g.source.name,
        "session_id": entry.session_id,
        **session_view(entry),
        "message": message,
    }
    return jsonify(payload), 201 if recorded.is_new else 200


@route("v1/status", methods=["GET", "POST"])
def status():
    """State of each listed session: ``?sessions=1,2,3`` (or a JSON body ``{"sessions": [1,2,3]}``)."""
    raw = request.args.get("sessions")
    if raw is None and request.method == "POST" and request.get_data():
        body, problem = _json_body()
        if problem:
            return problem
        raw = body.get("sessions") if isinstance(body, dict) else None
    ids = _session_ids(raw)
    if ids is None:
        return error(400, "Paramètre « sessions » invalide : une liste de numéros séparés par des virgules est attendue.")
    if not ids or any(not 1 <= i <= INT64_MAX for i in ids) or len(ids) > STATUS_MAX_SESSIONS:
        return error(400, f"Paramètre « sessions » invalide : de 1 à {STATUS_MAX_SESSIONS} numéros de session positifs.")
    ledger = services().ledger
    entries = ledger.get_many(g.source.name, ids, snapshots=False)
    notes = ledger.notes_for(g.source.name, ids)
    return jsonify(source=g.source.name, sessions={str(i): session_view(entries.get(i), notes.get(i)) for i in ids})


@route("v1/hello", methods=["GET"])
def hello():
    """The module's probe of the address (see the module docstring): nothing but "this is a receiver"."""
    return jsonify(status="ok")


@route("v1/ping", methods=["GET", "POST"])
def ping():
    """Answer the module's "Tester la connexion" button: the credentials work and the ledger is up."""
    services().ledger.ping()
    return jsonify(
        status="ok",
        source=g.source.name,
        message=ping_message(g.source.name),
    )


@bp.app_errorhandler(HTTPException)
def http_error(exc: HTTPException):
    """Every error is JSON; French words on the module's routes."""
    french = {
        404: "Adresse inconnue sur le récepteur : vérifiez le chemin configuré dans le module.",
        405: f"Méthode {request.method} non acceptée à cette adresse.",
        413: "Corps de requête trop volumineux.",
        415: "Type de contenu refusé : le corps doit être envoyé en application/json.",
    }
    response = error(exc.code or 500, french.get(exc.code, exc.description or exc.name))
    if exc.code == 405 and hasattr(exc, "valid_methods") and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


@bp.app_errorhandler(Exception)
def unexpected_error(exc: Exception):
    current_app.logger.exception("unexpected error", extra={"event": "error"})
    return error(500, "Erreur interne du récepteur : la notification n'a pas été enregistrée, réessayez plus tard.")
