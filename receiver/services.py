"""What one app instance holds: its configuration, ledger, throttle and metrics (no module globals)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import current_app
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from receiver.config import Config
from receiver.intake.auth import FailureThrottle
from receiver.ledger import Ledger

EXTENSION = "paheko_recyclic"


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass
class Metrics:
    """Prometheus counters of this process, in a registry of its own.

    Intake (receiver) counters:

    - ``notifications{source, outcome}``: new | duplicate | changed | rejected;
    - ``rejections{source, reason}``: why a notification was refused (call :meth:`rejected`);
    - ``auth_failures{status}``: 401 (no credentials), 403 (wrong), 429 (throttled).

    Worker counters (the worker increments them after each step):

    - ``snapshots{source, outcome}``: a re-read through Paheko's API — ``ok``, ``failed`` (will
      retry), ``held`` (a person must act), ``dead``;
    - ``forwards{source, outcome}``: a delivery to the sink — same outcomes.

    With ``$PROMETHEUS_MULTIPROC_DIR`` set (``deploy/``: the receiver and the pipeline
    worker of one host share it), values live in that directory and :meth:`exposition` sums them
    over all processes; without it, each process counts alone.
    """

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        if self.multiprocess_dir:
            os.makedirs(self.multiprocess_dir, exist_ok=True)

        def counter(name: str, doc: str, labels: list[str]) -> Counter:
            return Counter(f"paheko_recyclic_{name}", doc, labels, registry=self.registry)

        self.notifications = counter(
            "notifications", "Notifications by outcome (new, duplicate, changed, rejected).", ["source", "outcome"])
        self.rejections = counter("notification_rejections", "Refused notifications by reason.", ["source", "reason"])
        self.auth_failures = counter(
            "auth_failures", "Refused module authentications by HTTP status.", ["status"])
        self.snapshots = counter(
            "snapshots", "Re-reads of a session through Paheko's API by outcome (ok, failed, held, dead).",
            ["source", "outcome"])
        self.forwards = counter(
            "forwards", "Deliveries of a session to its sink by outcome (ok, failed, held, dead).",
            ["source", "outcome"])

    def rejected(self, source: str, reason: str) -> None:
        """Count a refused notification (``reason``: content_type, empty, json, invalid, …)."""
        self.notifications.labels(source=source, outcome="rejected").inc()
        self.rejections.labels(source=source, reason=reason).inc()

    def exposition(self, *collectors: Collector) -> bytes:
        """The Prometheus text format of these counters (all processes) followed by ``collectors``."""
        own: Collector = MultiProcessCollector(None, self.multiprocess_dir) if self.multiprocess_dir else self.registry
        return generate_latest(_Chain((own, *collectors)))


class _Chain:
    """Several collectors seen as one (what ``generate_latest`` walks)."""

    def __init__(self, collectors: tuple[Collector, ...]):
        self.collectors = collectors

    def collect(self):
        for collector in self.collectors:
            yield from collector.collect()


class ReadinessCache:
    """The last result of a ledger check, refreshed at most every ``interval`` seconds.

    ``/readyz`` may be polled by load balancers, container runtimes or anyone on the internet: a
    check is a write (an fsync'd transaction), so one request in ``interval`` pays it and the others
    read the cached answer. A failure is re-checked sooner (``retry``), so recovery shows quickly.
    """

    def __init__(self, interval: float = 10.0, retry: float = 2.0):
        self.interval = interval
        self.retry = retry
        self._lock = threading.Lock()
        self._result: tuple[bool, str | None] | None = None
        self._checked_at = float("-inf")
        self.checks = 0  # how many real checks ran (tests, metrics)

    def get(self, check: Callable[[], None]) -> tuple[bool, str | None]:
        """``(ready, error name)``; ``check`` raises when the ledger is not writable."""
        with self._lock:
            age = time.monotonic() - self._checked_at
            if self._result is not None and age < (self.interval if self._result[0] else self.retry):
                return self._result
            self.checks += 1
            try:
                check()
            except Exception as exc:  # any failure means "not ready"; the caller logs its name
                self._result = (False, type(exc).__name__)
            else:
                self._result = (True, None)
            self._checked_at = time.monotonic()
            return self._result


@dataclass
class Services:
    config: Config
    ledger: Ledger
    throttle: FailureThrottle
    metrics: Metrics
    readiness: ReadinessCache = field(default_factory=ReadinessCache)


def services() -> Services:
    """The services of the app handling the current request or CLI command."""
    return current_app.extensions[EXTENSION]
