"""Operator routes: ``/healthz`` (process up), ``/readyz`` (ledger writable, config loaded), ``/metrics``.

``/metrics`` (Prometheus text format) answers a request whose socket peer is the loopback interface
and that carries no proxy header at all (``X-Forwarded-For``, ``X-Real-IP``, ``Forwarded``, even
empty: a reverse proxy on the same host relays strangers from loopback), or one that carries
``Authorization: Bearer <[receiver] metrics_token>``; anything else gets 403.

``/readyz`` says ready or not, and nothing about the sources; the same operators (loopback without
proxy headers, or the metrics token) also get the configured source names. The ledger check behind
it runs at most every 10 s (:class:`receiver.services.ReadinessCache`): a flood costs no disk write.
"""

from __future__ import annotations

import hmac
import time
from datetime import datetime

from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy.exc import SQLAlchemyError

from receiver.config import Config
from receiver.intake.auth import parse_authorization, utf8_bytes
from receiver.ledger import Ledger, State
from receiver.proxies import direct_from_loopback
from receiver.services import services

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    svc = services()
    checks = svc.readiness.checks
    ready, problem = svc.readiness.get(svc.ledger.check_writable)
    if not ready:
        if svc.readiness.checks != checks:  # log each failed check once, not each cached answer
            current_app.logger.error("ledger not writable", extra={"event": "readyz", "error": problem})
        return jsonify(status="unavailable", ledger="not writable"), 503
    if _operator(svc):
        return jsonify(status="ready", ledger="writable", sources=sorted(svc.config.sources))
    return jsonify(status="ready", ledger="writable")


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


def _has_token(expected: str | None) -> bool:
    auth = parse_authorization(request.headers.get("Authorization"))
    if expected is None or auth is None or auth.type != "bearer" or not auth.token:
        return False
    return hmac.compare_digest(utf8_bytes(auth.token), expected.encode())


def _operator(svc) -> bool:
    """Loopback with no proxy header at all, or the metrics bearer token."""
    token = svc.config.receiver.metrics_token
    return direct_from_loopback(request.environ) or _has_token(token.reveal() if token else None)


@bp.get("/metrics")
def metrics():
    svc = services()
    if not _operator(svc):
        return jsonify(error="metrics are served to loopback or with the metrics bearer token"), 403
    body = svc.metrics.exposition(LedgerCollector(svc.config, svc.ledger))
    return Response(body, content_type=CONTENT_TYPE_LATEST)
