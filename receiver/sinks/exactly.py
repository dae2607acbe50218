"""Exactly-once bookkeeping, written once for every sink.

Each object a sink creates in its destination (a Recyclic session, a sale, a close, a webhook document, a
file line) goes through :meth:`ForwardLog.once`:

1. a ``done`` record in the ledger's forward log is trusted (the ledger is a cache of the destination);
2. otherwise the sink's ``find`` looks in the destination first — the destination is the record, so a
   ledger restored from an old backup, deleted, or left with a ``sending`` record whose answer was lost
   never makes a second copy: what is found is adopted and recorded ``done``;
3. only then is ``sending`` recorded (committed) and the object created, and ``done`` recorded with the
   destination's id right after the answer.

A failure that proves nothing left (:class:`~receiver.outcomes.NotSent`: refused connection, DNS, TLS, a
failed login) takes the ``sending`` mark back, so nothing is left to settle; any other failure leaves it,
and the next attempt settles it through ``find`` (or, for a sink that cannot look, by sending the same
idempotent request again). Remarks for the admin (:meth:`note`) are kept in the ledger at once.
"""

from __future__ import annotations

from collections.abc import Callable

from receiver.ledger import Entry, Forward, Ledger
from receiver.ledger.store import utcnow

FOUND = "Retrouvé dans la destination (déjà transmis) : repris tel quel, rien n'est renvoyé."


class ForwardLog:
    """The forward log of one entry during one delivery attempt (records read once, at the start)."""

    def __init__(self, ledger: Ledger, entry: Entry):
        self.ledger = ledger
        self.entry = entry
        self.records: dict[tuple[str, int], Forward] = ledger.forwards_of(entry.id)
        self.notes: list[str] = []

    # -- reading ------------------------------------------------------------------------------------

    def get(self, kind: str, paheko_id: int) -> Forward | None:
        return self.records.get((kind, paheko_id))

    def done_id(self, kind: str, paheko_id: int) -> str | None:
        """The destination's id of an object recorded ``done`` (``None`` otherwise)."""
        record = self.records.get((kind, paheko_id))
        return record.sink_id if record is not None and record.status == "done" else None

    def is_done(self, kind: str, paheko_id: int) -> bool:
        record = self.records.get((kind, paheko_id))
        return record is not None and record.status == "done"

    def unsettled(self, kind: str, paheko_id: int) -> bool:
        """A request left without a known outcome (``sending`` recorded, no answer recorded)."""
        record = self.records.get((kind, paheko_id))
        return record is not None and record.status == "sending"

    # -- writing ------------------------------------------------------------------------------------

    def once(self, kind: str, paheko_id: int, *, create: Callable[[], str],
             find: Callable[[], str | None] | None = None, key: str | None = None,
             detail: str | None = None, find_settles: bool = False) -> str:
        """The destination's id of object (``kind``, ``paheko_id``), created at most once (see module doc).

        ``find`` returns the id of the object already in the destination, or ``None``; a sink that cannot
        look passes none, and then relies on ``key`` (an idempotency key the destination honours). A ``done``
        record under another ``key`` was another content (a document id is a digest): it does not count.

        ``find_settles``: ``find`` recognises the object by a mark the destination keeps (a Recyclic v2 sale's
        note), whatever the ledger holds. The ``sending`` record then only has to survive a crash of the
        process (WAL keeps every commit), not a power cut: a power cut keeps a prefix of the ledger's
        commits, so a lost ``sending`` takes with it every later record of the entry (its ``done``, its
        state), the entry is delivered again, and ``find`` — always asked before a create when no ``done``
        is recorded — adopts what the request made. Its fsync is skipped (the per-object cost).
        """
        record = self.records.get((kind, paheko_id))
        if (record is not None and record.status == "done" and record.sink_id is not None
                and (key is None or record.idempotency_key in (None, key))):
            return record.sink_id
        if find is not None:
            found = find()
            if found is not None:
                self.mark(kind, paheko_id, "done", sink_id=found, key=key, detail=FOUND)
                return found
        previous = self.records.get((kind, paheko_id))
        self.mark(kind, paheko_id, "sending", key=key, durable=find is None or not find_settles)
        try:
            sink_id = create()
        except Exception as exc:
            if getattr(exc, "sent", True) is False:  # NotSent, or a client error raised before sending
                self.unmark(kind, paheko_id, previous)
            raise
        self.mark(kind, paheko_id, "done", sink_id=sink_id, key=key, detail=detail)
        return sink_id

    def mark(self, kind: str, paheko_id: int, status: str, *, sink_id: str | None = None, key: str | None = None,
             detail: str | None = None, durable: bool | None = None) -> None:
        """Record (and commit) a step; ``sending`` must be recorded before the request leaves."""
        self.ledger.record_forward(self.entry.id, kind, paheko_id, status=status, sink_id=sink_id,
                                   idempotency_key=key, detail=detail, durable=durable)
        self.records[(kind, paheko_id)] = Forward(kind, paheko_id, status, sink_id, key, detail, utcnow())

    def unmark(self, kind: str, paheko_id: int, previous: Forward | None) -> None:
        """Put back what was recorded before a request that never left."""
        if previous is None:
            self.ledger.drop_forward(self.entry.id, kind, paheko_id)
            self.records.pop((kind, paheko_id), None)
        else:
            self.mark(kind, paheko_id, previous.status, sink_id=previous.sink_id, key=previous.idempotency_key,
                      detail=previous.detail)

    def note(self, text: str) -> None:
        """A French remark for the admin, kept in the ledger now (``ledger show``, ``status``, the module)."""
        if text not in self.notes:
            self.notes.append(text)
            self.ledger.add_note(self.entry.id, text)

