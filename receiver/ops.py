"""Operator routes: ``/healthz`` (process up), ``/readyz`` (ledger writable, config loaded)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from sqlalchemy.exc import SQLAlchemyError

from receiver.services import services

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    svc = services()
    try:
        svc.ledger.check_writable()
    except SQLAlchemyError as exc:
        current_app.logger.error("ledger not writable", extra={"event": "readyz", "error": type(exc).__name__})
        return jsonify(status="unavailable", ledger="not writable"), 503
    return jsonify(status="ready", ledger="writable", sources=sorted(svc.config.sources))
