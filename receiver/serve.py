"""Serving the receiver over HTTP: waitress, for ``paheko-recyclic run`` and every deployment.

Why waitress (the issue-13 choice): a slow or stalled client must cost no worker thread. waitress
reads every request — request line, headers and whole body — on its single I/O loop (``poll``), and
hands it to one of ``threads`` application threads only once it is complete; the answer is written
back by the loop too. A socket that sends half a header, or a body one byte at a time, costs a file
descriptor and a few kilobytes, never a thread, and an idle one is closed after ``channel_timeout``.
gunicorn's ``gthread`` worker, which we shipped before, parses requests in its threads (8 stalled
sockets froze it); its ``gevent``/``eventlet`` workers would hold stalled sockets cheaply, but they
run the app on one OS thread, and SQLite's writes (fsync, and the busy-wait while the pipeline
worker holds the write lock) are blocking C calls that would freeze every other request meanwhile.
With waitress the app keeps real threads, so one process × N threads behaves exactly like the old
gthread set-up towards the ledger: one process, its writers queued on the ledger's lock (SQLite's
single-writer safety), and several processes are never needed for a receiver's load.

Errors that waitress itself answers (unparseable HTTP, oversize headers, bodies over its hard cap)
are turned into the receiver's JSON ``{"error": …}`` with a French message, always a 4xx.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import time
from dataclasses import dataclass

from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import ErrorTask

BIND_ENV = "PAHEKO_RECYCLIC_BIND"
THREADS_ENV = "PAHEKO_RECYCLIC_WEB_THREADS"
DEFAULT_BIND = "127.0.0.1:8000"

#: French words for the errors waitress answers before the app sees the request.
_SERVER_ERRORS = {
    400: "Requête HTTP mal formée : le récepteur n'a pas pu la lire.",
    413: "Corps de requête trop volumineux.",
    431: "En-têtes de la requête trop volumineux.",
}


class JsonErrorTask(ErrorTask):
    """waitress's protocol-level error answer, as the receiver's JSON error; never a 5xx.

    waitress answers 501 for a ``Transfer-Encoding`` it does not implement and 500 only for a
    request it could not parse at all: both are the client's malformed request here, so 400.
    """

    def execute(self):
        code = self.request.error.code
        code = code if 400 <= code < 500 else 400
        body = json.dumps({"error": _SERVER_ERRORS.get(code, _SERVER_ERRORS[400])}).encode()
        reasons = {400: "Bad Request", 413: "Content Too Large", 431: "Request Header Fields Too Large"}
        self.status = f"{code} {reasons.get(code, 'Bad Request')}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class ReceiverChannel(HTTPChannel):
    error_task_class = JsonErrorTask


@dataclass(frozen=True)
class ServeOptions:
    """How the receiver is served; every field has a safe default for a 2-core server.

    - ``threads``: application threads (the ledger queues writers on one lock; 8 overlap the
      fsync waits, as ``bench/intake.py`` measured with the former gthread set-up);
    - ``connection_limit``: open sockets held at once (stalled ones included); past it new
      connections wait in the listen backlog until one closes;
    - ``channel_timeout``: seconds of silence after which a connection is closed, mid-request or
      idle (Paheko's module waits 10 s at most, so an honest request is never that slow);
    - ``max_body_bytes``: the app's limit (``[receiver] max_body_bytes``); waitress buffers up to
      :attr:`server_body_cap` (16× that, 1 MiB at least: chunked framing counts, and 1-byte chunks
      weigh 6 bytes each) so the app itself answers 413 in JSON, chunked bodies included. Past the
      cap waitress answers the 413 (JSON too) without reading the rest, and closes.
    """

    bind: str = DEFAULT_BIND
    threads: int = 8
    connection_limit: int = 1000
    channel_timeout: int = 30
    max_body_bytes: int = 64 * 1024
    max_header_bytes: int = 32 * 1024

    @property
    def server_body_cap(self) -> int:
        return max(16 * self.max_body_bytes, 1024 * 1024)

    @classmethod
    def from_environment(cls, max_body_bytes: int, bind: str | None = None, threads: int | None = None):
        return cls(
            bind=bind or os.environ.get(BIND_ENV) or DEFAULT_BIND,
            threads=threads or int(os.environ.get(THREADS_ENV) or 8),
            max_body_bytes=max_body_bytes,
        )


class AccessLog:
    """WSGI middleware: one ``access`` event per answered request (method, path, status, duration)."""

    def __init__(self, app, logger: logging.Logger):
        self.app = app
        self.logger = logger

    def __call__(self, environ, start_response):
        started = time.perf_counter()

        def logged_start_response(status, headers, exc_info=None):
            self.logger.info(
                "%s %s %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"), status.split(" ", 1)[0],
                extra={"event": "access", "client": environ.get("REMOTE_ADDR"), "status": int(status[:3]),
                       "duration_ms": round((time.perf_counter() - started) * 1000, 2)},
            )
            return start_response(status, headers, exc_info)

        return self.app(environ, logged_start_response)


def _raise_file_limit(wanted: int) -> None:
    """Let the process hold ``wanted`` descriptors when the hard limit allows (systemd: 1024 soft)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def make_server(app, options: ServeOptions):
    """A waitress server for ``app``, listening already (``.run()`` serves; ``.effective_port``)."""
    _raise_file_limit(options.connection_limit + 128)
    server = create_server(
        AccessLog(app, logging.getLogger("receiver.access")),
        listen=options.bind,
        threads=options.threads,
        connection_limit=options.connection_limit,
        channel_timeout=options.channel_timeout,
        cleanup_interval=max(1, min(10, options.channel_timeout // 2)),
        max_request_header_size=options.max_header_bytes,
        max_request_body_size=options.server_body_cap,
        asyncore_use_poll=True,  # select() stops at 1024 descriptors
        ident="paheko-recyclic",
        expose_tracebacks=False,
        # waitress would delete X-Forwarded-For & co. before the app sees them (it trusts no proxy by
        # default): then /metrics could not tell a relayed request from a local one, and the app's
        # trusted_proxies (receiver.proxies, addresses and CIDR ranges) could not work. Keep them.
        clear_untrusted_proxy_headers=False,
    )
    servers = [server] if hasattr(server, "channel_class") else list(server.map.values())
    for each in servers:
        if hasattr(each, "channel_class"):
            each.channel_class = ReceiverChannel
    return server


def serve(app, options: ServeOptions) -> None:
    """Serve until SIGTERM or SIGINT; then running requests get a few seconds to finish."""
    server = make_server(app, options)
    # waitress's loop stops on KeyboardInterrupt and lets its threads finish their current request.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    logger = logging.getLogger("receiver.serve")
    host, port = getattr(server, "effective_host", options.bind), getattr(server, "effective_port", "")
    logger.info("receiver listening on http://%s:%s", host, port,
                extra={"event": "listening", "threads": options.threads,
                       "connection_limit": options.connection_limit, "channel_timeout": options.channel_timeout})
    server.run()
    logger.info("receiver stopped", extra={"event": "stopped"})
