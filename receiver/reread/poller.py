"""Reconciliation poller: finds closed sessions that no notification announced.

Sessions do not close in id order (several tills can be open at once), so a plain "highest id
seen" cursor would skip a low id that closes late. Instead each source keeps a *watermark* in the
ledger: every session below it is closed-and-known or does not exist. Each pass reads, in keyset
pages on ``id``, the closed sessions at or above the watermark together with the lowest id still
open, records the unknown ones exactly as if their module had notified them, and moves the
watermark to the lowest id that may still change (an open session, or the last one seen). The
watermark is durable, so a session closed while the receiver was down is found at the next start.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from receiver.config import Source
from receiver.ledger import Ledger
from receiver.ledger.store import utcnow
from receiver.reread.client import PahekoClient, sql_int

PAGE = 500


def watermark_key(source: str) -> str:
    return f"poll_watermark:{source}"


def _page_sql(after: int, floor: int) -> str:
    # One statement: the page of closed sessions and, in the same read, the lowest open session.
    return (
        "SELECT id, closed, (SELECT MIN(o.id) FROM plugin_pos_sessions o WHERE o.closed IS NULL"
        f" AND o.id >= {sql_int(floor)}) AS lowest_open FROM plugin_pos_sessions"
        f" WHERE closed IS NOT NULL AND id > {sql_int(after)} AND id >= {sql_int(floor)}"
        f" ORDER BY id LIMIT {PAGE}"
    )


def _lowest_open_sql(floor: int) -> str:
    return f"SELECT MIN(id) AS lowest_open FROM plugin_pos_sessions WHERE closed IS NULL AND id >= {sql_int(floor)}"


@dataclass
class PollReport:
    """What one pass over one source did."""

    source: str
    scanned: int = 0
    found: list[int] = field(default_factory=list)
    watermark_before: int = 0
    watermark_after: int = 0
    requests: int = 0


def poll_source(source: Source, client: PahekoClient, ledger: Ledger, *, origin: str = "poller") -> PollReport:
    """One reconciliation pass over ``source``; raises :class:`~receiver.reread.client.PahekoError` on failure."""
    stored = ledger.get_value(watermark_key(source.name))
    floor = max(source.paheko.first_session, int(stored) if stored else 1)
    report = PollReport(source.name, watermark_before=floor)
    after, last_seen, lowest_open = floor - 1, None, None
    while True:
        result = client.sql(_page_sql(after, floor))
        report.requests += 1
        rows = result.rows
        if not rows:
            if lowest_open is None and last_seen is None:
                lowest_open = client.sql(_lowest_open_sql(floor)).rows[0]["lowest_open"]
                report.requests += 1
            break
        if lowest_open is None:
            lowest_open = rows[0]["lowest_open"]
        report.scanned += len(rows)
        known = ledger.known_session_ids(source.name, (row["id"] for row in rows))
        for row in rows:
            if row["id"] not in known:
                ledger.record_notification(source.name, row["id"], {"closed": row["closed"]}, origin=origin)
                report.found.append(row["id"])
        after = last_seen = rows[-1]["id"]
        if len(rows) < PAGE:
            break
    candidates = [floor]
    if last_seen is not None:
        candidates = [last_seen + 1]
    if lowest_open is not None:
        candidates.append(lowest_open)
    report.watermark_after = max(floor, min(candidates))
    ledger.set_value(f"last_poll:{source.name}", utcnow().isoformat())
    if report.watermark_after != floor or stored is None:
        ledger.set_value(watermark_key(source.name), str(report.watermark_after))
    return report
