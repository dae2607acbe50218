"""Which client a request comes from, trusting proxy headers only from configured proxies.

``[receiver] trusted_proxies`` lists the reverse proxies' addresses or CIDR ranges (``"127.0.0.1"``,
``"::1"``, ``"172.18.0.0/16"``). A request whose socket peer is one of them has its client address
taken from ``X-Forwarded-For``: the right-most hop that is not itself a trusted proxy (hops further
left were written by the client and prove nothing). From any other peer, proxy headers are ignored
and the peer is the client — so a client reaching the receiver directly cannot pick its address,
whatever it sends. (The former setting was a hop count, which believed any peer's header.)

The socket peer stays available as ``environ["paheko_recyclic.peer"]`` (``/metrics`` and ``/readyz``
decide on it, not on the forwarded address).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
PEER_KEY = "paheko_recyclic.peer"
#: Every header by which a proxy says it relayed the request; their presence alone means "proxied".
PROXY_HEADERS = ("X-Forwarded-For", "X-Real-IP", "Forwarded")


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Addresses or CIDR ranges; raise ``ValueError`` naming the first one that is neither."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or a CIDR range") from None
    return tuple(networks)


def _address(text: str):
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    return address.ipv4_mapped or address if isinstance(address, ipaddress.IPv6Address) else address


def is_trusted(text: str | None, networks: tuple[IPNetwork, ...]) -> bool:
    address = _address(text or "")
    return address is not None and any(address.version == n.version and address in n for n in networks)


def client_address(peer: str, forwarded_for: str | None, networks: tuple[IPNetwork, ...]) -> str:
    """The client of a request from ``peer`` carrying ``X-Forwarded-For: forwarded_for``."""
    if not networks or not forwarded_for or not is_trusted(peer, networks):
        return peer
    client = peer
    for hop in reversed(forwarded_for.split(",")):
        address = _address(hop)
        if address is None:  # garbage from further left than any proxy we trust: stop at what we know
            break
        client = str(address)
        if not is_trusted(client, networks):
            break
    return client


class TrustedProxies:
    """WSGI middleware: ``REMOTE_ADDR`` becomes the client's address, per the rules above."""

    def __init__(self, app, networks: tuple[IPNetwork, ...]):
        self.app = app
        self.networks = networks

    def __call__(self, environ, start_response):
        peer = environ.get("REMOTE_ADDR") or ""
        environ[PEER_KEY] = peer
        environ["REMOTE_ADDR"] = client_address(peer, environ.get("HTTP_X_FORWARDED_FOR"), self.networks)
        if environ["REMOTE_ADDR"] != peer and environ.get("HTTP_X_FORWARDED_PROTO", "").strip() in ("http", "https"):
            environ["wsgi.url_scheme"] = environ["HTTP_X_FORWARDED_PROTO"].strip()
        return self.app(environ, start_response)


def direct_from_loopback(environ) -> bool:
    """The socket peer is loopback and no proxy header is present at all (even empty)."""
    if any(f"HTTP_{name.upper().replace('-', '_')}" in environ for name in PROXY_HEADERS):
        return False
    address = _address(environ.get(PEER_KEY, environ.get("REMOTE_ADDR")) or "")
    return address is not None and address.is_loopback
