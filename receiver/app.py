"""The Flask application factory."""

from __future__ import annotations

from flask import Flask
from receiver.config import Config, load_config
from receiver.intake.auth import FailureThrottle
from receiver.ledger import Ledger
from receiver.logs import configure_logging
from receiver.proxies import TrustedProxies, parse_networks
from receiver.services import EXTENSION, Metrics, Services


def create_app(config: Config | None = None) -> Flask:
    """Build the receiver for ``config`` (default: the file named by ``$PAHEKO_RECYCLIC_CONFIG``).

    The ledger is migrated here, so a receiver never serves on an outdated schema.
    """
    config = config or load_config()
    configure_logging(config)
    app = Flask("receiver")
    app.config.update(MAX_CONTENT_LENGTH=config.receiver.max_body_bytes, JSON_SORT_KEYS=False)
    app.json.ensure_ascii = True  # \uXXXX escapes: safe whatever Paheko's PHP does with charsets
    app.url_map.strict_slashes = False
    app.url_map.merge_slashes = False  # merging would answer with a redirect
    ledger = Ledger(config.receiver.ledger_url)
    ledger.migrate()
    app.extensions[EXTENSION] = Services(
        config=config,
        ledger=ledger,
        throttle=FailureThrottle(config.receiver.auth_failure_limit, config.receiver.auth_failure_window),
        metrics=Metrics(),
    )
    # Always installed: it also records the socket peer that /metrics and /readyz decide on.
    app.wsgi_app = TrustedProxies(app.wsgi_app, parse_networks(config.receiver.trusted_proxies))

    from receiver import ops
    from receiver.intake import report as _month_report  # noqa: F401 — registers the month view's route
    from receiver.intake import routes

    app.register_blueprint(routes.bp)
    app.register_blueprint(ops.bp)
    return app
