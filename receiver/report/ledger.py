"""Read the report's input from the ledger: one :class:`LedgerSession` per entry of a source and period.

Read-only, two queries (entries, then their forward records). Documents are parsed only for the entries of
the period: an entry's day is read from the start of its snapshot text before the whole JSON is.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from sqlalchemy import select

from receiver.ledger import Ledger
from receiver.ledger import tables as t
from receiver.report.reconcile import LedgerSession

#: The session's own ``opened`` is the first one in the stored (key-sorted) snapshot: balances, categories,
#: checks and methods come before it and have none; tabs come after. A miss falls back to parsing.
_OPENED = re.compile(r'"opened":\s*"(\d{4}-\d{2}-\d{2})')


def _snapshot_day(text: str) -> date:
    match = _OPENED.search(text)
    if match is not None:
        return date.fromisoformat(match[1])
    return date.fromisoformat(json.loads(text)["opened"][:10])


def load_sessions(ledger: Ledger, source: str, since: date, until: date, zone: tzinfo | None = None,
                  ) -> list[LedgerSession]:
    """The ledger's sessions of ``source`` whose day lies in ``since``..``until`` (inclusive)."""
    e = t.entries
    query = select(e.c.id, e.c.session_id, e.c.state, e.c.reason, e.c.summary, e.c.created_at, e.c.snapshot,
                   e.c.mapped).where(e.c.source == source)
    # An entry is created once its session is closed, so entries older than the period (a day of margin
    # for time zones) cannot hold one of its sessions: their documents are never read.
    query = query.where(e.c.created_at >= datetime.combine(since - timedelta(days=1), time.min, tzinfo=UTC))
    chosen = []
    with ledger.engine.connect() as conn:
        for row in conn.execute(query):
            summary = json.loads(row.summary or "{}")
            if row.snapshot:
                day = _snapshot_day(row.snapshot)
            elif summary.get("closed"):
                day = date.fromisoformat(str(summary["closed"])[:10])
            else:
                day = row.created_at.astimezone(zone).date()
            if since <= day <= until:
                chosen.append((row, summary, day))
        forwards: dict[int, dict] = {row.id: {} for row, _, _ in chosen}
        ids = sorted(forwards)
        f = t.forwards
        for start in range(0, len(ids), 500):
            batch = ids[start:start + 500]
            records = conn.execute(select(f.c.entry_id, f.c.kind, f.c.paheko_id, f.c.status, f.c.sink_id)
                                   .where(f.c.entry_id.in_(batch))).all()
            for entry_id, kind, paheko_id, status, sink_id in records:
                forwards[entry_id][(kind, paheko_id)] = (status, sink_id)
    return [
        LedgerSession(
            source=source, session_id=row.session_id, state=row.state, reason=row.reason,
            snapshot=json.loads(row.snapshot) if row.snapshot else None,
            mapped=json.loads(row.mapped) if row.mapped else None,
            forwards=forwards[row.id], summary=summary, day=day,
        )
        for row, summary, day in chosen
    ]
