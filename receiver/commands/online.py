"""``check-config --online``: can this machine reach each source's Paheko and its sink?"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx

from receiver.config import Source


def check_paheko(source: Source) -> tuple[str, bool]:
    """``SELECT 1`` through ``/api/sql`` with the source's key: address, certificate and key at once."""
    from receiver.reread.client import PahekoClient, PahekoError

    try:
        with PahekoClient(source.name, source.paheko, retries=0) as client:
            client.sql("SELECT 1 AS ok")
    except PahekoError as exc:
        return f"Paheko {source.paheko.url}: {exc}", False
    return f"Paheko {source.paheko.url}: /api/sql answers with this key", True


def check_sink(sink: object, source: str = "NAME") -> tuple[str, bool]:
    """An HTTP sink answers at all (any status: the address and TLS are right); a file sink is writable;
    no sink yet is said, not counted as a problem."""
    if sink is None:
        # Not a fault: before step 4 of the guide there is none, and sessions simply wait for it.
        return f"no sink configured yet: sessions wait until a [sources.{source}.sink] table is written", True
    url = getattr(sink, "url", None)
    if url:
        try:
            with httpx.Client(timeout=httpx.Timeout(10.0, connect=5.0), follow_redirects=False) as client:
                answer = client.get(url)
        except httpx.HTTPError as exc:
            return f"sink {url}: unreachable ({type(exc).__name__}: {exc})", False
        if answer.is_redirect:
            return f"sink {url}: answers with a redirect to {answer.headers.get('location')} (use that address)", False
        if answer.status_code >= 500:
            return f"sink {url}: answers HTTP {answer.status_code}", False
        return f"sink {url}: reachable (HTTP {answer.status_code})", True
    path = getattr(sink, "path", None)
    if path is not None:
        folder = Path(path).expanduser().parent
        if os.access(folder, os.W_OK):
            return f"sink file {path}: its folder is writable", True
        return f"sink file {path}: cannot write in {folder}", False
    return f"sink {type(sink).__name__}: nothing to check", True


def check_online(source: Source) -> Iterator[tuple[str, bool]]:
    yield check_paheko(source)
    yield check_sink(source.sink, source.name)
