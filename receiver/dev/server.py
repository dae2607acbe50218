"""Serve a WSGI app on 127.0.0.1 in a background thread: real HTTP for tests, the demo and benches."""

from __future__ import annotations

import socket
import threading
from types import TracebackType

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now on ``host``, for servers started in another process (`paheko-recyclic run`)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class QuietHandler(WSGIRequestHandler):
    """No access log line per request: tests, benches and the demo print what matters themselves."""

    def log_request(self, code="-", size="-") -> None:
        pass


class LocalServer:
    """A threaded HTTP server on a loopback address; use as a context manager.

    >>> with LocalServer(app) as server:
    ...     httpx.get(server.url + "/healthz")
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        self._server: BaseWSGIServer = make_server(host, port, app, threaded=True, request_handler=QuietHandler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-http", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "LocalServer":
        self._thread.start()
        return self

    def serve_until_interrupted(self) -> None:
        """Serve in the calling thread until Ctrl-C (for the ``dev`` commands)."""
        try:
            self._server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self._server.server_close()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
