"""The durable ledger: every notification, every session's pipeline state, every state change.

Writes are committed before the caller answers anyone. On SQLite the file runs in WAL mode with
``synchronous=FULL`` and each write transaction starts with ``BEGIN IMMEDIATE`` so concurrent
writers queue instead of failing; on PostgreSQL the same statements run unchanged.
Work is claimed with a compare-and-set on ``claim_expires_at``: two workers, in one process or
several, never hold the same entry, and a crashed worker's claim simply expires.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterable, Iterator
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import cached_property
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, create_engine, event, func, or_, select, text
from sqlalchemy.exc import IntegrityError

from receiver.ledger import tables as t
from receiver.ledger.states import ACTIVE, State
from receiver.ledger.wakeup import PerProcess, open_file
from receiver.ledger.wakeup import sqlite_path as _sqlite_path
from receiver.ledger.wakeup import wakeup_for


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Entry:
    """One Paheko session's place in the pipeline."""

    id: int
    source: str
    session_id: int
    state: State
    reason: str | None
    summary: dict
    origin: str
    created_at: datetime
    updated_at: datetime
    attempts: int
    next_attempt_at: datetime | None
    claimed_by: str | None
    claim_expires_at: datetime | None
    snapshot_json: str | None
    mapped_json: str | None
    last_error: str | None
    #: The (large) documents the row carried: listings read neither, the status route no snapshot.
    loaded: frozenset[str] = frozenset({"snapshot", "mapped"})

    @property
    def documents_loaded(self) -> bool:
        return {"snapshot", "mapped"} <= self.loaded

    def _document(self, name: str, text_value: str | None) -> dict | None:
        if name not in self.loaded:
            raise RuntimeError(f"this entry was read without its {name}: read it with Ledger.get_by_id")
        return json.loads(text_value) if text_value else None

    @cached_property
    def snapshot(self) -> dict | None:
        """The re-read session, parsed on first use (status and listings never need it)."""
        return self._document("snapshot", self.snapshot_json)

    @cached_property
    def mapped(self) -> dict | None:
        """The session in the sink's model, parsed on first use."""
        return self._document("mapped", self.mapped_json)

    @classmethod
    def from_row(cls, row) -> "Entry":
        """From a result row, or a mapping of the same columns."""
        m = row._mapping if hasattr(row, "_mapping") else row
        return cls(
            id=m["id"], source=m["source"], session_id=m["session_id"], state=State(m["state"]),
            reason=m["reason"], summary=json.loads(m["summary"] or "{}"), origin=m["origin"],
            created_at=m["created_at"], updated_at=m["updated_at"], attempts=m["attempts"],
            next_attempt_at=m["next_attempt_at"], claimed_by=m["claimed_by"],
            claim_expires_at=m["claim_expires_at"],
            snapshot_json=m.get("snapshot"), mapped_json=m.get("mapped"), last_error=m["last_error"],
            loaded=frozenset(name for name in ("snapshot", "mapped") if name in m),
        )


@dataclass(frozen=True)
class Forward:
    """What the ledger knows of one object sent to a sink."""

    kind: str
    paheko_id: int
    status: str  # sending (outcome unknown until settled) | done
    sink_id: str | None
    idempotency_key: str | None
    detail: str | None
    updated_at: datetime


@dataclass(frozen=True)
class Recorded:
    """What recording a notification did: ``outcome`` is new, duplicate or changed."""

    entry: Entry
    outcome: str

    @property
    def is_new(self) -> bool:
        return self.outcome == "new"


#: The figures a notification announces that a re-read also holds.
_FIGURES = ("result", "nb_tabs")


def _known_figures(summary: dict, snapshot_json: str | None, announced: dict) -> dict:
    """What the ledger knows of a session: its summary, completed with the re-read figures (``result``,
    ``nb_tabs``) that ``announced`` brings and the summary lacks, so that a notification arriving after the
    poller found the session still shows a change. The snapshot is parsed only then."""
    if not snapshot_json or all(key in summary or key not in announced for key in _FIGURES):
        return summary
    data = json.loads(snapshot_json)
    return {**{key: data[key] for key in _FIGURES if data.get(key) is not None}, **summary}


def _euros(cents: Any) -> str:
    if not isinstance(cents, int):
        return "?"
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100},{abs(cents) % 100:02d} €"


#: How the hold reason of a session changed in Paheko after tickets were sent begins.
CHANGED_AFTER_SENDING = "Les chiffres de la session"


def changed_after_sending(old: dict, new: dict, sent: list[int], session_id: int) -> str:
    """The French hold reason for a session changed in Paheko after some of its tickets reached the sink."""
    differs = []
    if "result" in new and old.get("result") != new["result"]:
        differs.append(f"total {_euros(old.get('result'))} → {_euros(new['result'])}")
    if "nb_tabs" in new and old.get("nb_tabs") != new["nb_tabs"]:
        differs.append(f"tickets {old.get('nb_tabs', '?')} → {new['nb_tabs']}")
    before = {p["method_id"]: p["total"] for p in old.get("payments") or []}
    after = {p["method_id"]: p["total"] for p in new.get("payments") or []}
    if after:
        for method in sorted(set(before) | set(after)):
            if before.get(method) != after.get(method):
                differs.append(f"moyen de paiement n° {method} {_euros(before.get(method, 0))} → "
                               f"{_euros(after.get(method, 0))}")
    if "closed" in new and old.get("closed") not in (None, new["closed"]):
        differs.append(f"clôture {old['closed']} → {new['closed']}")
    tickets = ", ".join(map(str, sent[:20])) + (" …" if len(sent) > 20 else "")
    return (
        f"{CHANGED_AFTER_SENDING} {session_id} ont changé dans Paheko ({'; '.join(differs) or 'détail inconnu'}) "
        f"alors que des tickets sont déjà dans Recyclic (tickets {tickets}). Rien n'est renvoyé. Au choix : "
        "corrigez dans Recyclic les ventes concernées (leur note nomme la session et le ticket Paheko), puis "
        "libérez la session (paheko-recyclic ledger release) : elle sera relue, les tickets absents de Recyclic "
        "seront envoyés et ceux déjà présents ne seront pas renvoyés ; ou laissez Recyclic tel quel et "
        "abandonnez cette mise à jour (la session reste bloquée, visible dans « status »)."
    )


#: The columns a listing reads: everything but the re-read and mapped documents (up to megabytes each).
_LISTED = [c for c in t.entries.c if c.name not in ("snapshot", "mapped")]
_WITHOUT_SNAPSHOT = [c for c in t.entries.c if c.name != "snapshot"]
_ACTIVE_VALUES = [s.value for s in ACTIVE]


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


#: PostgreSQL advisory lock held while migrating (any constant unique to this program).
MIGRATION_LOCK = 0x5041_4845_4B4F



class _FileLock:
    """An exclusive ``flock`` on a file beside the ledger."""

    def __init__(self, path: str) -> None:
        self._file = open_file(path)

    def __enter__(self) -> None:
        fcntl.flock(self._file.get(), fcntl.LOCK_EX)

    def __exit__(self, *exc_info: object) -> None:
        fcntl.flock(self._file.get(), fcntl.LOCK_UN)


class _IntakeGate:
    """Answering Paheko before background work, across processes, on a file beside the SQLite ledger.

    A receiver holds a shared ``flock`` on it while it answers notifications; a background write
    (the worker's, inside :meth:`Ledger.relaxed`) first waits until nobody holds it, for at most
    :attr:`budget` seconds. SQLite has one writer at a time: without the wait, each notification
    queued behind the worker's commits (and the worker's CPU) while Paheko's page waited for the
    answer (4 clients beside a forwarding worker: p99 36 ms; with it: 23 ms). The budget bounds what
    a flood of notifications can cost the worker; notifications never wait for the worker's turn.
    Holding and probing use two open files, so a process that answers and works sees its own answers.
    The gate only orders work: a file it cannot open (another user's, a read-only directory) turns
    it off for this process, with one warning, and never costs an answer.
    """

    budget = 0.02

    def __init__(self, path: str) -> None:
        self.path = path
        self._hold, self._probe = open_file(path), open_file(path)
        self._mutex = threading.Lock()
        self._answering = 0
        self._off = False

    def _fd(self, file: PerProcess[int]) -> int | None:
        """``file``'s descriptor, or None once the gate is off; call with the mutex held."""
        if not self._off:
            try:
                return file.get()
            except OSError as error:
                self._off = True
                logging.getLogger("receiver.ledger").warning(
                    "intake gate %s unusable (%s): the worker's writes no longer give way to answers",
                    self.path, error.strerror, extra={"event": "intake_gate_off"})
        return None

    @contextmanager
    def answering(self) -> Iterator[None]:
        """Held while this process answers at least one notification (a count: threads share the lock)."""
        with self._mutex:
            fd = self._fd(self._hold)
            if fd is not None and self._answering == 0:
                fcntl.flock(fd, fcntl.LOCK_SH)
            self._answering += 1
        try:
            yield
        finally:
            with self._mutex:
                self._answering -= 1
                if fd is not None and self._answering == 0:
                    fcntl.flock(fd, fcntl.LOCK_UN)

    def wait_for_answers(self) -> None:
        """Return once no notification is being answered, or after :attr:`budget` seconds."""
        deadline = time.monotonic() + self.budget
        with self._mutex:
            fd = self._fd(self._probe)
        while fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return
                time.sleep(0.001)
                continue
            fcntl.flock(fd, fcntl.LOCK_UN)
            return


class Ledger:
    """Access to the ledger database; one instance per process, safe to share between threads."""

    def __init__(self, url: str, *, pool_size: int = 5):
        self.url = url
        path = _sqlite_path(url)
        self.engine = self._make_engine(url, path, pool_size)
        # SQLite has one writer at a time. Writers of this process queue on a thread lock, and
        # writers of every process (the receiver, the pipeline worker) on an flock of a file
        # beside the ledger: the kernel hands the lock over the moment it is released, where
        # SQLite's busy handler makes a waiting writer sleep 1, 2, 5 … 100 ms between retries (a
        # receiver thread losing that race to the worker's writes saw p99 of 100-450 ms).
        self._write_lock = threading.Lock() if url.startswith("sqlite") else None
        self._file_lock = _FileLock(path + ".lock") if path else None
        self._gate = _IntakeGate(path + ".intake") if path else None
        self.wakeup = wakeup_for(url, self.engine)
        self._local = threading.local()

    @contextmanager
    def relaxed(self) -> Iterator[None]:
        """Writes of this thread that redoing can replace skip their fsync (SQLite ``synchronous=NORMAL``).

        For the worker: a claim, a snapshot, a mapped document or a state change lost to a power cut
        (never to a crash of the process: WAL keeps those) is simply done again. Records that must
        survive anything are still fsync'd: a notification, and a ``sending`` forward record written
        before a request leaves. The worker's commits then no longer hold the write lock for an fsync
        each while the receiver waits to commit a notification. The worker also runs the WAL
        checkpoints (the receiver only past 10,000 pages), so their fsyncs stay off the intake path.
        """
        before = getattr(self._local, "relaxed", False)
        self._local.relaxed = True
        try:
            yield
        finally:
            self._local.relaxed = before

    def answering(self):
        """Around answering a notification: background writes wait (briefly) until it is answered."""
        return self._gate.answering() if self._gate is not None else nullcontext()

    @contextmanager
    def _write(self, *, durable: bool = False) -> Iterator[Connection]:
        """A write transaction, committed on exit (``BEGIN IMMEDIATE`` on SQLite); fsync'd unless inside
        :meth:`relaxed` and not ``durable``."""
        if self._write_lock is None:
            with self.engine.begin() as conn:
                yield conn
            return
        background = getattr(self._local, "relaxed", False)
        if background and self._gate is not None:
            self._gate.wait_for_answers()
        relaxed = background and not durable
        with self._write_lock, self._file_lock or nullcontext(), self.engine.connect() as conn:
            conn.info["immediate"] = "relaxed" if relaxed else "durable"
            try:
                with conn.begin():
                    yield conn
            finally:
                conn.info.pop("immediate", None)

    @staticmethod
    def _make_engine(url: str, path: str | None, pool_size: int) -> Engine:
        """``path``: the SQLite file (None for PostgreSQL or an in-memory SQLite)."""
        if url.startswith("sqlite"):
            if path:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

            @event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn, _record):
                dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=FULL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()

            @event.listens_for(engine, "begin")
            def _begin(conn):
                # Reads take no lock at all in WAL mode (a deferred BEGIN); only writes reserve the file.
                mode = conn.info.get("immediate")
                if mode is None:
                    conn.exec_driver_sql("BEGIN")
                    return
                if conn.info.get("sync_mode") != mode:  # per connection, applies at commit
                    durable = mode == "durable"
                    conn.exec_driver_sql(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                    conn.exec_driver_sql(f"PRAGMA wal_autocheckpoint={10_000 if durable else 1000}")
                    conn.info["sync_mode"] = mode
                conn.exec_driver_sql("BEGIN IMMEDIATE")

            return engine
        return create_engine(url, pool_size=pool_size, pool_pre_ping=True)

    # -- lifecycle -------------------------------------------------------------------------

    def migrate(self) -> tuple[int, int]:
        with self._write() as conn:
            if conn.dialect.name == "postgresql":
                # Receivers and workers starting together: one migrates, the others wait, then see it done.
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            return t.migrate(conn)

    def check_writable(self) -> None:
        """Raise if the ledger cannot take a write right now (used by /readyz)."""
        with self._write() as conn:
            conn.execute(t.meta.update().where(t.meta.c.key == "schema_version").values(value=t.meta.c.value))

    def close(self) -> None:
        self.engine.dispose()

    def transaction(self):
        """A write transaction for callers outside the ledger (tests, maintenance)."""
        return self._write()

    # -- intake ----------------------------------------------------------------------------

    def record_notification(
        self,
        source: str,
        session_id: int,
        summary: dict,
        *,
        origin: str,
        raw_body: str | None = None,
        event_id: str | None = None,
        remote_addr: str | None = None,
    ) -> Recorded:
        """Store one notification and create or update its session's entry, atomically.

        Idempotency key: (source, session_id). A duplicate leaves the entry as it is; a notification
        whose figures differ from what was known is recorded as ``changed`` and sends the session
        back to be re-read (or to a person, when it already reached Recyclic).
        """
        now = utcnow()
        with self._write() as conn:
            row = self._entry_row(conn, source, session_id)
            if row is None:
                fields = dict(
                    source=source, session_id=session_id, state=State.NOTIFIED.value, reason=None,
                    summary=_dump(summary), origin=origin, created_at=now, updated_at=now, attempts=0,
                    next_attempt_at=None, claimed_by=None, claim_expires_at=None, snapshot=None, mapped=None,
                    last_error=None,
                )
                try:
                    with conn.begin_nested() if self._write_lock is None else nullcontext():
                        insert = {k: v for k, v in fields.items() if v is not None}
                        fields["id"] = conn.execute(t.entries.insert(), insert).inserted_primary_key[0]
                        self._log_change(conn, fields["id"], None, State.NOTIFIED, None, now)
                    outcome = "new"
                except IntegrityError:  # a concurrent writer (PostgreSQL) created it first
                    row = self._entry_row(conn, source, session_id)
            if row is not None:
                fields = dict(row._mapping)
                old = json.loads(row.summary or "{}")
                known = _known_figures(old, row.snapshot, summary)
                changed = any(key in known and known[key] != value for key, value in summary.items())
                merged = {**old, **summary}
                outcome = "changed" if changed else "duplicate"
                values: dict[str, Any] = {"summary": _dump(merged)}
                if changed:
                    values["updated_at"] = now
                    self._changed(conn, row, known, summary, now, values)
                if values["summary"] != row.summary or changed:
                    conn.execute(t.entries.update().where(t.entries.c.id == row.id).values(**values))
                    fields.update(values)
            # Statements without .values(): their compiled form is cached, the parameters vary.
            conn.execute(
                t.notifications.insert(),
                dict(entry_id=fields["id"], received_at=now, origin=origin, outcome=outcome, event_id=event_id,
                     remote_addr=remote_addr, summary=_dump(summary), raw_body=raw_body),
            )
            # A duplicate changes nothing a worker could act on: no poke for it (nor its NOTIFY, socket sends).
            wake = outcome != "duplicate" and fields["state"] in _ACTIVE_VALUES
            if wake:
                self.wakeup.in_transaction(conn, source)
        if wake:
            self.wakeup.committed(source)
        entry = Entry.from_row(fields)
        return Recorded(entry, outcome)

    def _changed(self, conn: Connection, row, old: dict, new: dict, now: datetime, values: dict) -> None:
        """A session's figures changed in Paheko. Nothing sent yet: re-read and re-map it, whatever its
        state (a held one keeps waiting for a person, who re-reads it by releasing it). Tickets already
        sent: hold it, saying what differs and what can be done."""
        current = State(row.state)
        sent = sorted(conn.execute(
            select(t.forwards.c.paheko_id).where(
                t.forwards.c.entry_id == row.id, t.forwards.c.kind.in_(("sale", "document")))
        ).scalars())
        if sent:
            values.update(snapshot=None, mapped=None, next_attempt_at=None)
            self._set_state(conn, row.id, current, State.HELD, changed_after_sending(old, new, sent, row.session_id),
                            now, values)
            return
        if current == State.HELD:
            values.update(snapshot=None, mapped=None)  # releasing it re-reads the session
            return
        if current != State.NOTIFIED or row.snapshot is not None:
            reason = "Les chiffres annoncés ont changé : la session sera relue dans Paheko."
            values.update(next_attempt_at=None, snapshot=None, mapped=None, attempts=0)
            self._set_state(conn, row.id, current, State.NOTIFIED, reason, now, values)

    # -- reading ---------------------------------------------------------------------------

    _BY_KEY = select(t.entries).where(
        t.entries.c.source == bindparam("source"), t.entries.c.session_id == bindparam("session_id"))

    @classmethod
    def _entry_row(cls, conn: Connection, source: str, session_id: int):
        return conn.execute(cls._BY_KEY, {"source": source, "session_id": session_id}).first()

    def get(self, source: str, session_id: int) -> Entry | None:
        with self.engine.connect() as conn:
            row = self._entry_row(conn, source, session_id)
        return Entry.from_row(row) if row else None

    def get_by_id(self, entry_id: int) -> Entry | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.entries).where(t.entries.c.id == entry_id)).first()
        return Entry.from_row(row) if row else None

    def get_many(self, source: str, session_ids: Iterable[int], *, snapshots: bool = True) -> dict[int, Entry]:
        """The entries of ``session_ids``; without their snapshots when not ``snapshots`` (the status route)."""
        ids = sorted(set(session_ids))
        if not ids:
            return {}
        columns = [t.entries] if snapshots else _WITHOUT_SNAPSHOT
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(*columns).where(t.entries.c.source == source, t.entries.c.session_id.in_(ids))
            ).all()
        return {row.session_id: Entry.from_row(row) for row in rows}

    def known_session_ids(self, source: str, ids: Iterable[int]) -> set[int]:
        """Which of ``ids`` the ledger has for ``source`` (reads the ids only)."""
        wanted = sorted(set(ids))
        if not wanted:
            return set()
        with self.engine.connect() as conn:
            return set(conn.execute(
                select(t.entries.c.session_id)
                .where(t.entries.c.source == source, t.entries.c.session_id.in_(wanted))
            ).scalars())

    def list(
        self,
        *,
        source: str | None = None,
        states: Iterable[State] | None = None,
        limit: int = 50,
        documents: bool = True,
    ) -> list[Entry]:
        """The most recently changed entries; ``documents=False`` leaves out the re-read and mapped
        documents (megabytes for a big session), for listings that show states and reasons."""
        query = select(*(_LISTED if not documents else [t.entries])).order_by(t.entries.c.updated_at.desc(), t.entries.c.id.desc()).limit(limit)
        if source:
            query = query.where(t.entries.c.source == source)
        if states:
            query = query.where(t.entries.c.state.in_([State(s).value for s in states]))
        with self.engine.connect() as conn:
            return [Entry.from_row(row) for row in conn.execute(query)]

    def history(self, entry_id: int) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.state_changes).where(t.state_changes.c.entry_id == entry_id).order_by(t.state_changes.c.id)
            ).all()
        return [dict(row._mapping) for row in rows]

    def notifications_of(self, entry_id: int) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.notifications).where(t.notifications.c.entry_id == entry_id).order_by(t.notifications.c.id)
            ).all()
        return [dict(row._mapping) for row in rows]

    def counts(self) -> dict[tuple[str, str], int]:
        """Number of entries per (source, state)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.entries.c.source, t.entries.c.state, func.count()).group_by(t.entries.c.source, t.entries.c.state)
            ).all()
        return {(source, state): n for source, state, n in rows}

    def overview(self) -> dict[str, dict]:
        """Per source: entries per state, oldest unfinished entry, last notification from a module."""
        pending = [s.value for s in ACTIVE]
        with self.engine.connect() as conn:
            oldest = dict(conn.execute(
                select(t.entries.c.source, func.min(t.entries.c.created_at))
                .where(t.entries.c.state.in_(pending)).group_by(t.entries.c.source)
            ).all())
            last = dict(conn.execute(
                select(t.entries.c.source, func.max(t.notifications.c.received_at))
                .join(t.entries, t.entries.c.id == t.notifications.c.entry_id)
                .where(t.notifications.c.origin == "module").group_by(t.entries.c.source)
            ).all())
        out: dict[str, dict] = {}
        for (source, state), n in self.counts().items():
            out.setdefault(source, {"states": {}})["states"][state] = n
        for source, info in out.items():
            info["oldest_pending"] = oldest.get(source)
            info["last_notification"] = last.get(source)
        return out

    # -- worker side -----------------------------------------------------------------------

    def claim(self, worker: str, *, lease: timedelta = timedelta(seconds=30), now: datetime | None = None,
              entry_id: int | None = None, source: str | None = None) -> Entry | None:
        """Claim the oldest due entry (of ``source`` if given; or entry ``entry_id``, due or not), or ``None``.

        Candidates are read without any lock; only a found candidate costs a write, a compare-and-set
        that succeeds on a row still due and unclaimed, so it is safe across threads, processes and hosts.
        A claim lasts ``lease``: its holder renews it (:meth:`renew_claims`) while it works, so the
        claim of a worker that died is free again ``lease`` later.
        """
        now = now or utcnow()
        free = or_(t.entries.c.claim_expires_at.is_(None), t.entries.c.claim_expires_at < now)
        due = and_(t.entries.c.state.in_(_ACTIVE_VALUES), free)
        if entry_id is None:
            due = and_(due, or_(t.entries.c.next_attempt_at.is_(None), t.entries.c.next_attempt_at <= now))
        else:
            due = and_(due, t.entries.c.id == entry_id)
        if source is not None:
            due = and_(due, t.entries.c.source == source)
        with self.engine.connect() as conn:
            candidates = conn.execute(select(t.entries.c.id).where(due).order_by(t.entries.c.id).limit(5)).scalars().all()
        if not candidates:
            return None
        with self._write() as conn:
            for candidate in candidates:
                taken = conn.execute(
                    t.entries.update()
                    .where(t.entries.c.id == candidate, due)
                    .values(claimed_by=worker, claim_expires_at=now + lease)
                ).rowcount
                if taken == 1:
                    return Entry.from_row(conn.execute(select(t.entries).where(t.entries.c.id == candidate)).one())
        return None

    def renew_claims(self, claims: dict[int, str], *, lease: timedelta) -> set[int]:
        """Extend the claims ``{entry id: worker}`` by ``lease`` from now; return the ids still held."""
        if not claims:
            return set()
        held = set()
        until = utcnow() + lease
        with self._write() as conn:
            for entry_id, worker in claims.items():
                if conn.execute(
                    t.entries.update()
                    .where(t.entries.c.id == entry_id, t.entries.c.claimed_by == worker)
                    .values(claim_expires_at=until)
                ).rowcount:
                    held.add(entry_id)
        return held

    def next_due(self, source: str | None = None, *, now: datetime | None = None) -> datetime | None:
        """When the next entry (of ``source``) becomes claimable: retry time or claim expiry; ``None``: nothing pending."""
        now = now or utcnow()
        c = t.entries.c
        active = [c.state.in_(_ACTIVE_VALUES)] + ([c.source == source] if source is not None else [])
        free = or_(c.claim_expires_at.is_(None), c.claim_expires_at < now)
        with self.engine.connect() as conn:
            retry = conn.execute(select(func.min(func.coalesce(c.next_attempt_at, now))).where(*active, free)).scalar()
            expiry = conn.execute(select(func.min(c.claim_expires_at)).where(*active, ~free)).scalar()
        times = [moment for moment in (retry, expiry) if moment is not None]
        return min(times) if times else None

    def release_claim(self, entry_id: int, worker: str) -> None:
        with self._write() as conn:
            conn.execute(
                t.entries.update()
                .where(t.entries.c.id == entry_id, t.entries.c.claimed_by == worker)
                .values(claimed_by=None, claim_expires_at=None)
            )

    def transition(
        self,
        entry_id: int,
        to_state: State,
        *,
        reason: str | None = None,
        expect: Iterable[State] | None = None,
        **values: Any,
    ) -> Entry:
        """Move an entry to ``to_state`` (recording the change); ``expect`` guards the current state.

        Extra keyword values are written to the entry in the same transaction (``snapshot`` and
        ``mapped`` are serialised to JSON). Raises ``LookupError`` when the entry is not in an
        expected state.
        """
        now = utcnow()
        for key in ("snapshot", "mapped"):
            if values.get(key) is not None and not isinstance(values[key], str):
                values[key] = _dump(values[key])
        with self._write() as conn:
            row = conn.execute(select(t.entries).where(t.entries.c.id == entry_id)).first()
            if row is None:
                raise LookupError(f"no ledger entry {entry_id}")
            current = State(row.state)
            if expect is not None and current not in set(expect):
                raise LookupError(f"entry {entry_id} is {current.value}, not {', '.join(s.value for s in expect)}")
            values = {"reason": reason, **values}
            self._set_state(conn, entry_id, current, to_state, reason, now, values)
            conn.execute(t.entries.update().where(t.entries.c.id == entry_id).values(**values))
            return Entry.from_row(conn.execute(select(t.entries).where(t.entries.c.id == entry_id)).one())

    @staticmethod
    def _set_state(conn, entry_id, current: State, to_state: State, reason, now, values: dict) -> None:
        values.update(state=to_state.value, updated_at=now, reason=reason)
        if current != to_state:
            Ledger._log_change(conn, entry_id, current, to_state, reason, now)

    @staticmethod
    def _log_change(conn, entry_id, from_state: State | None, to_state: State, reason, now) -> None:
        conn.execute(
            t.state_changes.insert(),
            dict(entry_id=entry_id, at=now, from_state=from_state.value if from_state else None,
                 to_state=to_state.value, reason=reason),
        )

    # -- forwarding (write-ahead log of what was sent to the sink) ---------------------------

    def forwards_of(self, entry_id: int) -> dict[tuple[str, int], Forward]:
        """Everything recorded as sent (or being sent) for an entry, by (kind, paheko_id)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.forwards).where(t.forwards.c.entry_id == entry_id)).all()
        return {(r.kind, r.paheko_id): Forward(**{k: r._mapping[k] for k in Forward.__dataclass_fields__}) for r in rows}

    def record_forward(
        self,
        entry_id: int,
        kind: str,
        paheko_id: int,
        *,
        status: str,
        sink_id: str | None = None,
        idempotency_key: str | None = None,
        detail: str | None = None,
        durable: bool | None = None,
    ) -> None:
        """Upsert one forward record and commit it (call with ``sending`` *before* the request leaves).

        ``durable`` (default: for ``sending``) fsyncs the commit even inside :meth:`relaxed`."""
        if status not in ("sending", "done"):
            raise ValueError(f"unknown forward status {status!r}")
        row = dict(k_entry=entry_id, k_kind=kind, k_paheko=paheko_id, status=status, sink_id=sink_id,
                   idempotency_key=idempotency_key, detail=detail, updated_at=utcnow())
        # Two commits per sale: prebuilt statements keep them cheap. "sending" must survive a power
        # cut (the request leaves next) unless the destination itself settles it (see ForwardLog.once);
        # losing "done" only means reading the sink back.
        with self._write(durable=status == "sending" if durable is None else durable) as conn:
            if conn.execute(self._UPDATE_FORWARD, row).rowcount == 0:
                conn.execute(t.forwards.insert(), dict(entry_id=entry_id, kind=kind, paheko_id=paheko_id,
                                                       **{k: v for k, v in row.items() if not k.startswith("k_")}))

    def drop_forward(self, entry_id: int, kind: str, paheko_id: int) -> None:
        """Forget a ``sending`` record whose request provably never left (refused connection, failed login)."""
        with self._write() as conn:
            conn.execute(t.forwards.delete().where(
                t.forwards.c.entry_id == entry_id, t.forwards.c.kind == kind, t.forwards.c.paheko_id == paheko_id,
                t.forwards.c.status == "sending"))

    def forget_documents(self, entry_id: int) -> int:
        """Drop an entry's ``document`` records (webhook and file sinks), so that a resend asks the destination
        itself whether it holds the document; Recyclic's records (its ids) are kept."""
        with self._write() as conn:
            return conn.execute(t.forwards.delete().where(
                t.forwards.c.entry_id == entry_id, t.forwards.c.kind == "document")).rowcount

    def forward_owners(self, kind: str, sink_ids: Iterable[str]) -> dict[str, int]:
        """Which entry (id) records each of ``sink_ids`` (those no entry records are absent)."""
        ids = sorted(set(sink_ids))
        if not ids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.forwards.c.sink_id, t.forwards.c.entry_id).where(
                t.forwards.c.kind == kind, t.forwards.c.sink_id.in_(ids))).all()
        return {sink_id: entry_id for sink_id, entry_id in rows}

    def unsettled(self, kind: str) -> list[Entry]:
        """Entries with a ``kind`` record left ``sending`` (a request whose outcome is not known yet: in flight
        in another thread, or its answer lost): what a sink must not take for a leftover of its own."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.entries).join(t.forwards, t.forwards.c.entry_id == t.entries.c.id)
                .where(t.forwards.c.kind == kind, t.forwards.c.status == "sending")
            ).all()
        return [Entry.from_row(row) for row in rows]

    def forward_owner(self, kind: str, sink_id: str) -> Entry | None:
        """The entry whose forward log records ``sink_id`` (e.g. which Paheko session a Recyclic session is)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.entries).join(t.forwards, t.forwards.c.entry_id == t.entries.c.id)
                .where(t.forwards.c.kind == kind, t.forwards.c.sink_id == sink_id).limit(1)
            ).first()
        return Entry.from_row(row) if row else None

    # -- delivery notes (what a sink did that an admin should know) -------------------------

    def add_note(self, entry_id: int, text: str) -> None:
        with self._write() as conn:
            conn.execute(t.notes.insert(), dict(entry_id=entry_id, at=utcnow(), text=text))

    def notes_of(self, entry_id: int) -> list[dict]:
        """``{"at", "text"}`` of every note of an entry, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.notes.c.at, t.notes.c.text).where(t.notes.c.entry_id == entry_id).order_by(t.notes.c.id)
            ).all()
        return [dict(row._mapping) for row in rows]

    def notes_for(self, source: str, session_ids: Iterable[int]) -> dict[int, list[str]]:
        """Note texts per Paheko session id of ``source`` (sessions without notes are absent)."""
        ids = sorted(set(session_ids))
        if not ids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.entries.c.session_id, t.notes.c.text).join(t.entries, t.entries.c.id == t.notes.c.entry_id)
                .where(t.entries.c.source == source, t.entries.c.session_id.in_(ids)).order_by(t.notes.c.id)
            ).all()
        out: dict[int, list[str]] = {}
        for session_id, text_ in rows:
            out.setdefault(session_id, []).append(text_)
        return out

    def recent_notes(self, source: str, limit: int = 20) -> list[tuple[int, datetime, str]]:
        """The latest notes of a source: (Paheko session id, when, text), newest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.entries.c.session_id, t.notes.c.at, t.notes.c.text)
                .join(t.entries, t.entries.c.id == t.notes.c.entry_id)
                .where(t.entries.c.source == source).order_by(t.notes.c.id.desc()).limit(limit)
            ).all()
        return [tuple(row) for row in rows]

    _UPDATE_FORWARD = t.forwards.update().where(
        t.forwards.c.entry_id == bindparam("k_entry"), t.forwards.c.kind == bindparam("k_kind"),
        t.forwards.c.paheko_id == bindparam("k_paheko"),
    )

    # -- small named values (poll watermarks, …) -------------------------------------------

    def get_value(self, key: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(t.meta.c.value).where(t.meta.c.key == key)).scalar()

    def set_value(self, key: str, value: str) -> None:
        with self._write() as conn:
            if conn.execute(t.meta.update().where(t.meta.c.key == key).values(value=value)).rowcount == 0:
                conn.execute(t.meta.insert().values(key=key, value=value))

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
