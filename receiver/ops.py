"""Operator routes: ``/healthz`` (process up), ``/readyz`` (ledger writable, config loaded), ``/metrics``.

``/metrics`` (Prometheus text format) answers a request that comes straight from the loopback
interface (no ``X-Forwarded-For``/``Forwarded`` header, so not relayed by a reverse proxy) or that
carries ``Authorization: Bearer <[receiver] metrics_token>``; anything else gets 403.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from datetime import datetime

from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy.exc import SQLAlchemyError

from receiver.config import Config
from receiver.ledger import Ledger, State
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


class LedgerCollector:
    """Gauges computed from the ledger at scrape time, so every process and host agrees on them."""

    def __init__(self, config: Config, ledger: Ledger):
        self.config = config
        self.ledger = ledger

    def collect(self):
        up = GaugeMetricFamily("paheko_recyclic_ledger_up", "1 when the ledger answered this scrape.")
        try:
            overview = self.ledger.overview()
        except SQLAlchemyError as exc:
            current_app.logger.error("ledger unreadable", extra={"event": "metrics", "error": type(exc).__name__})
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        depth = GaugeMetricFamily(
            "paheko_recyclic_ledger_entries", "Ledger entries (sessions) per source and pipeline state.",
            labels=["source", "state"])
        oldest = GaugeMetricFamily(
            "paheko_recyclic_oldest_pending_age_seconds",
            "Age of the oldest entry still moving through the pipeline (notified, snapshot, mapped, failed); 0 if none.",
            labels=["source"])
        last = GaugeMetricFamily(
            "paheko_recyclic_last_notification_timestamp_seconds",
            "Unix time of the last notification received from the source's module.", labels=["source"])
        now = time.time()
        stored = [s for s in State if s is not State.UNKNOWN]
        for name in sorted(set(self.config.sources) | set(overview)):
            info = overview.get(name, {"states": {}, "oldest_pending": None, "last_notification": None})
            for state in stored:
                depth.add_metric([name, state.value], info["states"].get(state.value, 0))
            pending: datetime | None = info["oldest_pending"]
            oldest.add_metric([name], max(0.0, now - pending.timestamp()) if pending else 0.0)
            if info["last_notification"]:
                last.add_metric([name], info["last_notification"].timestamp())
        yield from (depth, oldest, last)


def _from_loopback() -> bool:
    if request.headers.get("X-Forwarded-For") or request.headers.get("Forwarded"):
        return False
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


def _has_token(expected: str | None) -> bool:
    auth = request.authorization
    if expected is None or auth is None or auth.type != "bearer" or not auth.token:
        return False
    return hmac.compare_digest(auth.token.encode(), expected.encode())


@bp.get("/metrics")
def metrics():
    svc = services()
    token = svc.config.receiver.metrics_token
    if not (_from_loopback() or _has_token(token.reveal() if token else None)):
        return jsonify(error="metrics are served to loopback or with the metrics bearer token"), 403
    body = svc.metrics.exposition(LedgerCollector(svc.config, svc.ledger))
    return Response(body, content_type=CONTENT_TYPE_LATEST)
