"""HTTP pieces shared by every outgoing client (Paheko's ``/api/sql``, each sink): one ``Retry-After``
parser, one User-Agent, and which httpx failures mean that the request never left."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

import httpx

from receiver import __version__

USER_AGENT = f"paheko-recyclic/{__version__}"


def retry_after_seconds(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (a number or an HTTP date), or ``None`` when absent or unreadable."""
    value = (response.headers.get("retry-after") or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


def never_sent(exc: httpx.HTTPError) -> bool:
    """True when the request cannot have reached the server: no connection was made (refused, DNS, TLS
    handshake, connect timeout) or no pooled connection was free. A read/write timeout or a connection cut
    after sending leaves the outcome unknown."""
    return isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol))
