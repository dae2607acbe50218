"""A fault-injecting HTTP proxy in front of a Recyclic (stand-in or real): the same faults for both targets.

Every request is forwarded to the upstream as it came; a scripted pattern ("POST sales/") can make the
proxy *lose the answer*: the upstream processes the request, then the client's connection is reset, so
the forwarder cannot know what happened. It counts requests per pattern, and can call a hook when a
pattern is hit (the restart scenario kills the worker there, before the answer reaches it).
"""

from __future__ import annotations

import threading
from collections import Counter
from fnmatch import fnmatchcase
from typing import Callable

import httpx
from werkzeug.wrappers import Request, Response

from receiver.dev.recyclic_faults import _drop_connection

HOP_HEADERS = {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "accept-encoding"}


class FaultProxy:
    """WSGI app: ``upstream`` is the Recyclic base URL with its prefix (``http://127.0.0.1:8090/v1``)."""

    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self._client = httpx.Client(timeout=60)
        self._lock = threading.Lock()
        self._lose: dict[str, list[int]] = {}  # pattern -> remaining hit numbers to lose (1-based)
        self._hooks: dict[str, tuple[int, Callable[[], None]]] = {}
        self.counts: Counter[str] = Counter()
        self.seen: list[str] = []

    def lose_answer(self, pattern: str, *hits: int) -> None:
        """Lose the answer of the ``hits``-th requests matching ``pattern`` ("METHOD path-glob")."""
        with self._lock:
            self._lose.setdefault(pattern, []).extend(hits)

    def on_hit(self, pattern: str, hit: int, hook: Callable[[], None]) -> None:
        """Call ``hook`` after the ``hit``-th matching request was processed upstream, before answering."""
        with self._lock:
            self._hooks[pattern] = (hit, hook)

    def count(self, pattern: str) -> int:
        with self._lock:
            return sum(1 for target in self.seen if fnmatchcase(target, pattern))

    def close(self) -> None:
        self._client.close()

    def __call__(self, environ, start_response):
        request = Request(environ)
        path = request.path.lstrip("/")
        target = f"{request.method} {path}"
        with self._lock:
            self.seen.append(target)
            lose = hook = False
            for pattern, hits in self._lose.items():
                if fnmatchcase(target, pattern):
                    n = sum(1 for t in self.seen if fnmatchcase(t, pattern))
                    if n in hits:
                        hits.remove(n)
                        lose = True
            for pattern, (hit, callback) in list(self._hooks.items()):
                if fnmatchcase(target, pattern) and sum(1 for t in self.seen if fnmatchcase(t, pattern)) == hit:
                    del self._hooks[pattern]
                    hook = callback
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        upstream = self._client.request(request.method, f"{self.upstream}/{path}", params=request.args,
                                        content=request.get_data(), headers=headers)
        if hook:
            hook()
        if lose:
            _drop_connection(environ)
            start_response("500 Dropped", [("Content-Length", "0")])
            return [b""]
        response = Response(upstream.content, upstream.status_code,
                            [(k, v) for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS])
        return response(environ, start_response)
