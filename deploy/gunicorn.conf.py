"""gunicorn settings for the receiver on a small (2-core) server: ``gunicorn -c deploy/gunicorn.conf.py``.

Worker model: **gthread, 1 process × 8 threads** with the default SQLite ledger. A request is short
but waits on I/O (SQLite's fsync with ``synchronous=FULL``); the ledger is thread-safe and queues one
process's writers on a lock, so threads overlap the waits fairly. Several processes would instead meet
on SQLite's file lock, whose busy handler sleeps in 10-100 ms steps: ``bench/intake.py`` measured a
p99 of 188 ms with 2 processes × 4 threads under 4 concurrent clients, 17 ms with 1 × 8. With a
PostgreSQL ledger, raise ``PAHEKO_RECYCLIC_WEB_WORKERS`` to 2 (one per core). Paheko waits 10 s at
most, so ``timeout`` is well above any honest request and ``graceful_timeout`` lets in-flight
notifications finish their commit on SIGTERM (systemd's ``TimeoutStopSec`` and compose's
``stop_grace_period`` are longer still).

Overrides (environment, or the command line, which beats this file): ``PAHEKO_RECYCLIC_BIND``
(default ``127.0.0.1:8000``, behind the reverse proxy; ``0.0.0.0:8000`` in a container),
``PAHEKO_RECYCLIC_WEB_WORKERS``, ``PAHEKO_RECYCLIC_WEB_THREADS``, ``PAHEKO_RECYCLIC_LOG_LEVEL``.
The configuration file comes from ``$PAHEKO_RECYCLIC_CONFIG``.
"""

import os

wsgi_app = "receiver.app:create_app()"
bind = [os.environ.get("PAHEKO_RECYCLIC_BIND", "127.0.0.1:8000")]
worker_class = "gthread"
workers = int(os.environ.get("PAHEKO_RECYCLIC_WEB_WORKERS", "1"))
threads = int(os.environ.get("PAHEKO_RECYCLIC_WEB_THREADS", "8"))
timeout = 30
graceful_timeout = 15
keepalive = 5  # above the proxies' idle upstream timeout would be wasted; below Paheko's 10 s budget

# No runtime control socket: nothing should reshape the server behind systemd's back, and with
# ProtectSystem=strict there is no writable $HOME for it anyway.
control_socket_disable = True
# The heartbeat files of the workers: memory-backed when possible (containers' /tmp may be slow).
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None

# The request line and headers of a module notification are small; refuse anything oversized early.
limit_request_line = 4094
limit_request_fields = 50

# Logs: one JSON event per line on stdout (journald / docker logs collect it).
loglevel = os.environ.get("PAHEKO_RECYCLIC_LOG_LEVEL", "info").lower()
accesslog = "-"
errorlog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(B)s %(M)sms'
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    # The root logger is the app's: receiver.logs.configure_logging installs its secret-masking
    # handler there when the app loads. gunicorn's own loggers get the same formatter here.
    "root": {"level": "WARNING", "handlers": []},
    "formatters": {"json": {"()": "receiver.logs.JsonFormatter"}},
    "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}},
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": ["stdout"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["stdout"], "propagate": False},
    },
}


def when_ready(server):
    """Warn when the workers' counters cannot be summed (see ``receiver.services.Metrics``)."""
    if server.cfg.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        server.log.warning(
            "PROMETHEUS_MULTIPROC_DIR is not set: each /metrics scrape shows one worker's counters only"
        )
