"""Reconciliation poller: finds closed sessions that no notification announced.

Sessions do not close in id order (several tills can be open at once, one may stay open for
weeks), so each source keeps two things in the ledger: a *cursor*, the highest session id seen,
and the ids at or below it that were still *open* when last seen. Each pass reads, in keyset pages
on ``id``, the sessions above the cursor plus the open ones (id and closing time only), records the
closed ones the ledger does not know exactly as if their module had notified them, and keeps
watching those still open. A pass with nothing new therefore costs one request whose answer holds
one short row per open till, whatever the length of the history or the age of the open session (a
single low watermark, pinned by an old open session, made every pass re-read everything above it).
The state is durable, so a session closed while the receiver was down is found at the next start.
A session deleted in Paheko while open is dropped from the watch list.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from receiver.config import Source
from receiver.ledger import Ledger
from receiver.ledger.store import utcnow
from receiver.reread.client import PahekoCancelled, PahekoClient, PahekoError, sql_int

PAGE = 500


def state_key(source: str) -> str:
    return f"poll_state:{source}"


def _legacy_watermark_key(source: str) -> str:
    return f"poll_watermark:{source}"  # before the cursor: every id below it was known or absent


def _page_sql(after: int, cursor: int, open_ids: list[int]) -> str:
    wanted = f"id > {sql_int(cursor)}"
    if open_ids:
        wanted = f"({wanted} OR id IN ({', '.join(sql_int(i) for i in open_ids)}))"
    return (f"SELECT id, closed FROM plugin_pos_sessions WHERE {wanted} AND id > {sql_int(after)}"
            f" ORDER BY id LIMIT {PAGE}")


def _load_state(ledger: Ledger, source: Source) -> tuple[int, list[int], bool]:
    """(cursor, open ids, stored?) of ``source``."""
    stored = ledger.get_value(state_key(source.name))
    if stored:
        state = json.loads(stored)
        return max(state["cursor"], source.paheko.first_session - 1), sorted(state["open"]), True
    legacy = ledger.get_value(_legacy_watermark_key(source.name))
    cursor = int(legacy) - 1 if legacy else 0
    return max(cursor, source.paheko.first_session - 1), [], False


@dataclass
class PollReport:
    """What one pass over one source did."""

    source: str
    scanned: int = 0  # sessions read (new ones and the open ones watched)
    found: list[int] = field(default_factory=list)
    watermark_before: int = 0  # the first id that was new to this pass
    watermark_after: int = 0  # the first id the next pass will see as new
    requests: int = 0
    bytes: int = 0
    open: list[int] = field(default_factory=list)  # sessions still open, watched by the next pass


def count_to_scan(source: Source, client: PahekoClient, ledger: Ledger) -> int:
    """How many sessions the next pass will read (one request): the length of a progress bar."""
    cursor, open_ids, _ = _load_state(ledger, source)
    wanted = f"id > {sql_int(cursor)}"
    if open_ids:
        wanted = f"({wanted} OR id IN ({', '.join(sql_int(i) for i in open_ids)}))"
    rows = client.sql(f"SELECT COUNT(*) AS n FROM plugin_pos_sessions WHERE {wanted}").rows
    return int(rows[0]["n"]) if rows else 0


def logged_poll(source: Source, client: PahekoClient, ledger: Ledger, log: logging.Logger) -> PollReport:
    """:func:`poll_source`, with its ``poll`` event on ``log`` (a warning when it fails, then re-raised)."""
    try:
        report = poll_source(source, client, ledger)
    except PahekoCancelled:
        raise
    except PahekoError as exc:
        log.warning("poll failed", extra={"event": "poll", "source": source.name, "error": str(exc)})
        raise
    log.info("poll", extra={"event": "poll", "source": source.name, "found": report.found, "scanned": report.scanned})
    return report


def poll_source(source: Source, client: PahekoClient, ledger: Ledger, *, origin: str = "poller",
                progress: Callable[[int], None] | None = None) -> PollReport:
    """One reconciliation pass over ``source``; raises :class:`~receiver.reread.client.PahekoError` on failure.

    ``progress`` is called with the number of sessions of each page read (a progress bar's ``update``).
    """
    cursor, open_ids, stored = _load_state(ledger, source)
    report = PollReport(source.name, watermark_before=cursor + 1)
    after, still_open, highest = 0, [], cursor
    while True:
        result = client.sql(_page_sql(after, cursor, open_ids))
        report.requests += 1
        report.bytes += result.size
        rows = result.rows
        closed = [row for row in rows if row["closed"] is not None]
        still_open += [row["id"] for row in rows if row["closed"] is None]
        report.scanned += len(rows)
        known = ledger.known_session_ids(source.name, (row["id"] for row in closed))
        for row in closed:
            if row["id"] not in known:
                ledger.record_notification(source.name, row["id"], {"closed": row["closed"]}, origin=origin)
                report.found.append(row["id"])
        if progress is not None and rows:
            progress(len(rows))
        if rows:
            after = rows[-1]["id"]
            highest = max(highest, after)
        if len(rows) < PAGE:
            break
    report.watermark_after, report.open = highest + 1, still_open
    ledger.set_value(f"last_poll:{source.name}", utcnow().isoformat())
    if not stored or highest != cursor or still_open != open_ids:
        ledger.set_value(state_key(source.name), json.dumps({"cursor": highest, "open": still_open}))
    return report
