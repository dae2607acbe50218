"""HTTP Basic authentication of a Paheko module, with Paheko's own semantics.

No credentials → 401, wrong credentials → 403 (both ``{"error": …}`` in French). Passwords are
compared in constant time. Failures are counted per (client address, user name): a pair that keeps
failing is throttled (429 + Retry-After), and nobody else is — the real module, from its own address
or under its own user name, keeps getting in whatever a scanner does next to it. The client address
is the proxy-resolved one (``receiver.proxies``), so modules behind one reverse proxy stay apart.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections import deque
from dataclasses import dataclass

from werkzeug.datastructures import Authorization

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
    """Counts authentication failures per key — (client address, user name) — over a sliding window."""

    limit: int
    window: float

    def __post_init__(self) -> None:
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        stamps = self._failures.setdefault(key, deque())
        while stamps and stamps[0] <= now - self.window:
            stamps.popleft()
        return stamps

    def retry_after(self, key: tuple[str, str]) -> int | None:
        """Seconds to wait when ``key`` is over the limit, else ``None``."""
        now = time.monotonic()
        with self._lock:
            stamps = self._recent(key, now)
            if len(stamps) < self.limit:
                if not stamps:
                    self._failures.pop(key, None)
                return None
            return max(1, int(stamps[0] + self.window - now + 0.999))

    def record_failure(self, key: tuple[str, str]) -> None:
        now = time.monotonic()
        with self._lock:
            self._recent(key, now).append(now)
            if len(self._failures) > 10_000:  # bounded memory under a scan from many addresses or names
                oldest = min(self._failures, key=lambda a: self._failures[a][-1] if self._failures[a] else 0)
                self._failures.pop(oldest, None)


def parse_authorization(header: str | None) -> Authorization | None:
    """The ``Authorization`` header, or ``None`` when absent or unreadable (any bytes may come in)."""
    if not header:
        return None
    try:
        return Authorization.from_header(header)
    except (ValueError, TypeError, UnicodeError):  # werkzeug: non-ASCII base64 text raises ValueError
        return None


def utf8_bytes(text: str) -> bytes:
    """Bytes to compare; a lone surrogate (undecodable input) can never match a configured secret."""
    return text.encode("utf-8", "surrogatepass")


def authenticate(config: Config, throttle: FailureThrottle, address: str, authorization) -> Source:
    """Return the source whose module sent these credentials, or raise :class:`AuthFailure`."""
    if authorization is None or authorization.type != "basic" or not authorization.username:
        raise AuthFailure(401, "Identifiants manquants : le module doit envoyer son identifiant et son mot de passe.")
    user = authorization.username
    key = (address, user[:200])
    wait = throttle.retry_after(key)
    if wait is not None:
        raise AuthFailure(429, f"Trop d'échecs d'authentification : réessayez dans {wait} s.", wait)
    password = utf8_bytes(authorization.password or "")
    source = config.source_for_webhook_user(user)
    ok = False
    for cred in source.webhook if source else ():
        # Compare every credential of the source, always, so timing says nothing about which matched.
        same_user = hmac.compare_digest(utf8_bytes(cred.user), utf8_bytes(user))
        same_password = hmac.compare_digest(cred.password.reveal().encode(), password)
        ok |= same_user and same_password
    if not ok:
        # Unknown users cost a comparison too.
        hmac.compare_digest(password, b"x" * max(1, len(password)))
        throttle.record_failure(key)
        raise AuthFailure(403, "Identifiants refusés : vérifiez l'identifiant et le mot de passe dans la configuration du module.")
    return source
