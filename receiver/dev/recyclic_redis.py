"""The part of the Recyclic stand-in's state that the real v2 keeps in Redis, and therefore can lose.

Recyclic v2 keeps idempotency answers (24 h), the step-up PIN failure counter (a 60 s window) and the PIN
lock-out (15 min) in Redis, not in PostgreSQL. A Redis restart, a ``FLUSHALL`` or an eviction forgets
them all: after that, the same ``Idempotency-Key`` creates a duplicate and a locked user is free again.
:class:`VolatileStore` is that Redis: keys with an expiry on the stand-in's clock, and :meth:`flush`
(``POST /_stand-in/redis/flush``) to lose everything the way a restart does. Sessions, sales and users
(PostgreSQL in the real one) are not in here and survive a flush.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable


@dataclass
class _Value:
    value: Any
    expires_at: datetime | None


class VolatileStore:
    """A tiny Redis: ``get``/``setex``/``incr``/``expire``/``delete``/``flush``, expiring on ``clock``."""

    def __init__(self, clock: Callable[[], datetime]):
        self._clock = clock
        self._lock = threading.RLock()
        self._data: dict[str, _Value] = {}

    def _live(self, key: str) -> _Value | None:
        entry = self._data.get(key)
        if entry is not None and entry.expires_at is not None and entry.expires_at <= self._clock():
            del self._data[key]
            return None
        return entry

    def get(self, key: str) -> Any:
        with self._lock:
            entry = self._live(key)
            return None if entry is None else entry.value

    def exists(self, key: str) -> bool:
        return self.get(key) is not None

    def setex(self, key: str, ttl: timedelta, value: Any) -> None:
        with self._lock:
            self._data[key] = _Value(value, self._clock() + ttl)

    def incr(self, key: str) -> int:
        """Like Redis ``INCR``: a missing key counts from 0 and keeps no expiry until :meth:`expire`."""
        with self._lock:
            entry = self._live(key)
            if entry is None:
                entry = self._data[key] = _Value(0, None)
            entry.value += 1
            return entry.value

    def expire(self, key: str, ttl: timedelta) -> None:
        with self._lock:
            entry = self._live(key)
            if entry is not None:
                entry.expires_at = self._clock() + ttl

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def keys(self, prefix: str = "") -> list[str]:
        with self._lock:
            return [key for key in list(self._data) if key.startswith(prefix) and self._live(key) is not None]

    def flush(self) -> int:
        """Forget everything, as a Redis restart without persistence or ``FLUSHALL`` does; returns the count."""
        with self._lock:
            count = len(self.keys())
            self._data.clear()
            return count
