"""Scripted failures for the Recyclic stand-in: a WSGI middleware in front of the Flask app.

>>> app.faults.script("POST /sales/", Fault.error(503), Fault.lost_response())
>>> app.faults.down(); app.faults.up()

Patterns are ``"METHOD /path"`` globs (:mod:`fnmatch`) on the path *after* the API prefix, e.g.
``"POST /cash-sessions/*/close"``; without a method they match any method. Each matching request
consumes the next scripted fault of the first pattern that matches; ``/_stand-in/`` is never faulted.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Callable, Iterable, Literal


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour; build it with the class methods."""

    kind: Literal["status", "reset", "delay", "lost_response"]
    status: int | None = None
    retry_after: int | None = None
    seconds: float = 0.0

    @classmethod
    def error(cls, status: int = 503, *, retry_after: int | None = None) -> "Fault":
        """Answer ``status`` with the error envelope (and ``Retry-After`` when given); nothing processed."""
        return cls("status", status=status, retry_after=retry_after)

    @classmethod
    def reset(cls) -> "Fault":
        """Drop the connection before processing: the client sees a transport error."""
        return cls("reset")

    @classmethod
    def delay(cls, seconds: float) -> "Fault":
        """Wait ``seconds`` (real time) then process normally: a client with a shorter timeout gives up."""
        return cls("delay", seconds=seconds)

    @classmethod
    def lost_response(cls, status: int | None = None) -> "Fault":
        """Process the request (state changes), then drop the connection or, with ``status``, answer
        that error instead of the real response: the client cannot know the outcome."""
        return cls("lost_response", status=status)


class Faults:
    """The fault script and the down switch of one stand-in (thread-safe)."""

    def __init__(self, prefix: str):
        self._prefix = prefix
        self._lock = threading.Lock()
        self._scripts: dict[str, deque[Fault]] = {}
        self._down = False

    def script(self, pattern: str, *faults: Fault) -> None:
        """Queue ``faults`` for the next requests matching ``pattern``, in order."""
        with self._lock:
            self._scripts.setdefault(pattern, deque()).extend(faults)

    def clear(self) -> None:
        """Forget every scripted fault and come back up."""
        with self._lock:
            self._scripts.clear()
            self._down = False

    def pending(self) -> int:
        """How many scripted faults are still waiting for a request."""
        with self._lock:
            return sum(len(queue) for queue in self._scripts.values())

    def down(self) -> None:
        """Answer 503 to every API request until :meth:`up`."""
        self._down = True

    def up(self) -> None:
        self._down = False

    @property
    def is_down(self) -> bool:
        return self._down

    def next_for(self, method: str, path: str) -> Fault | None:
        if not path.startswith(self._prefix):
            return None
        target = f"{method} {path[len(self._prefix):] or '/'}"
        with self._lock:
            if self._down:
                return Fault.error(503)
            for pattern, queue in self._scripts.items():
                glob = pattern if " " in pattern else f"* {pattern}"
                if queue and fnmatchcase(target, glob):
                    return queue.popleft()
        return None


def _drop_connection(environ: dict[str, Any]) -> None:
    sock = environ.get("werkzeug.socket")
    if sock is None:
        raise RuntimeError("connection faults need the werkzeug server (the stand-ins' own)")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.shutdown(socket.SHUT_RDWR)


def _envelope(status: int, retry_after: int | None, environ: dict[str, Any]) -> tuple[str, list, bytes]:
    correlation_id = environ.get("HTTP_X_REQUEST_ID") or uuid.uuid4().hex
    body = json.dumps({"code": "SERVICE_UNAVAILABLE" if status == 503 else f"HTTP_{status}",
                       "detail": "Injected fault", "retryable": True, "correlation_id": correlation_id}).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
               ("x-request-id", correlation_id)]
    if retry_after is not None:
        headers.append(("Retry-After", str(retry_after)))
    return f"{status} Injected", headers, body


class FaultMiddleware:
    """Applies :class:`Faults` before (or after) the wrapped WSGI app runs."""

    def __init__(self, app: Callable, faults: Faults):
        self.app = app
        self.faults = faults

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        fault = self.faults.next_for(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""))
        if fault is None:
            return self.app(environ, start_response)
        if fault.kind == "delay":
            time.sleep(fault.seconds)
            return self.app(environ, start_response)
        if fault.kind == "lost_response":
            response = self.app(environ, lambda *args, **kwargs: None)
            for _ in response:  # let the request finish completely
                pass
            getattr(response, "close", lambda: None)()
            if fault.status is not None:
                return self._answer(fault.status, None, environ, start_response)
        if fault.kind in ("reset", "lost_response"):
            _drop_connection(environ)
            start_response("500 Dropped", [("Content-Length", "0")])
            return [b""]
        return self._answer(fault.status or 503, fault.retry_after, environ, start_response)

    @staticmethod
    def _answer(status: int, retry_after: int | None, environ, start_response) -> list[bytes]:
        line, headers, body = _envelope(status, retry_after, environ)
        start_response(line, headers)
        return [body]
