"""HTTP Basic authentication of a Paheko module, with Paheko's own semantics.

No credentials → 401, wrong credentials → 403 (both ``{"error": …}`` in French). Passwords are
compared in constant time, and an address that keeps failing is throttled (429 + Retry-After).
"""

from __future__ import annotations

import hmac
import threading
import time
from collections import deque
from dataclasses import dataclass

from receiver.config import Config, Source


class AuthFailure(Exception):
    """The request is not from a known module; ``status`` and ``message`` form the answer."""

    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


@dataclass
class FailureThrottle:
    """Counts authentication failures per client address over a sliding window."""

    limit: int
    window: float

    def __post_init__(self) -> None:
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, address: str, now: float) -> deque[float]:
        stamps = self._failures.setdefault(address, deque())
        while stamps and stamps[0] <= now - self.window:
            stamps.popleft()
        return stamps

    def retry_after(self, address: str) -> int | None:
        """Seconds to wait when ``address`` is over the limit, else ``None``."""
        now = time.monotonic()
        with self._lock:
            stamps = self._recent(address, now)
            if len(stamps) < self.limit:
                if not stamps:
                    self._failures.pop(address, None)
                return None
            return max(1, int(stamps[0] + self.window - now + 0.999))

    def record_failure(self, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._recent(address, now).append(now)
            if len(self._failures) > 10_000:  # bounded memory under a scan from many addresses
                oldest = min(self._failures, key=lambda a: self._failures[a][-1] if self._failures[a] else 0)
                self._failures.pop(oldest, None)


def authenticate(config: Config, throttle: FailureThrottle, address: str, authorization) -> Source:
    """Return the source whose module sent these credentials, or raise :class:`AuthFailure`."""
    wait = throttle.retry_after(address)
    if wait is not None:
        raise AuthFailure(429, f"Trop d'échecs d'authentification : réessayez dans {wait} s.", wait)
    if authorization is None or authorization.type != "basic" or not authorization.username:
        raise AuthFailure(401, "Identifiants manquants : le module doit envoyer son identifiant et son mot de passe.")
    user = authorization.username
    password = (authorization.password or "").encode()
    source = config.source_for_webhook_user(user)
    ok = False
    for cred in source.webhook if source else ():
        # Compare every credential of the source, always, so timing says nothing about which matched.
        same_user = hmac.compare_digest(cred.user.encode(), user.encode())
        same_password = hmac.compare_digest(cred.password.reveal().encode(), password)
        ok |= same_user and same_password
    if not ok:
        # Unknown users cost a comparison too.
        hmac.compare_digest(password, b"x" * max(1, len(password)))
        throttle.record_failure(address)
        raise AuthFailure(403, "Identifiants refusés : vérifiez l'identifiant et le mot de passe dans la configuration du module.")
    return source
