"""What one app instance holds: its configuration, ledger, throttle and metrics (no module globals)."""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import current_app
from prometheus_client import CollectorRegistry, Counter

from receiver.config import Config
from receiver.intake.auth import FailureThrottle
from receiver.ledger import Ledger

EXTENSION = "paheko_recyclic"


@dataclass
class Metrics:
    """Prometheus counters of this process, in a registry of its own."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.notifications = Counter(
            "paheko_recyclic_notifications", "Notifications by outcome (new, duplicate, changed, rejected).",
            ["source", "outcome"], registry=self.registry,
        )
        self.auth_failures = Counter(
            "paheko_recyclic_auth_failures", "Refused module authentications by HTTP status.",
            ["status"], registry=self.registry,
        )


@dataclass
class Services:
    config: Config
    ledger: Ledger
    throttle: FailureThrottle
    metrics: Metrics


def services() -> Services:
    """The services of the app handling the current request or CLI command."""
    return current_app.extensions[EXTENSION]
