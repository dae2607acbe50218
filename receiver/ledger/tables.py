"""The ledger's tables and forward-only migrations (SQLAlchemy Core: SQLite or PostgreSQL).

Times are stored as naive UTC and handed back as aware UTC datetimes, so the same SQL runs on
both back-ends. Each migration is a function applied once, in order, inside a transaction;
``meta.schema_version`` records the last one applied.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import (
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    inspect,
    select,
)
from sqlalchemy.types import DateTime, TypeDecorator


class UTCDateTime(TypeDecorator):
    """Aware datetimes in, aware UTC datetimes out; naive UTC in the database."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("the ledger only stores time-zone-aware datetimes")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect):
        return None if value is None else value.replace(tzinfo=UTC)


metadata = MetaData()

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

#: One row per (source, Paheko session): the session's place in the pipeline.
entries = Table(
    "entries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(64), nullable=False),
    Column("session_id", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("reason", Text),  # French, for the admin, when held / failed / dead
    Column("summary", Text, nullable=False, default="{}"),  # JSON: latest figures announced
    Column("origin", String(16), nullable=False),  # module | poller | replay | backfill
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime),
    Column("claimed_by", String(128)),
    Column("claim_expires_at", UTCDateTime),
    Column("snapshot", Text),  # JSON: the validated re-read of the session
    Column("mapped", Text),  # JSON: the session in the sink's model (added by migration 2)
    Column("last_error", Text),
    UniqueConstraint("source", "session_id", name="uq_entries_source_session"),
)
Index("ix_entries_state_next", entries.c.state, entries.c.next_attempt_at)

#: Every accepted notification, raw body kept for replay.
notifications = Table(
    "notifications",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("entry_id", Integer, ForeignKey("entries.id"), nullable=False, index=True),
    Column("received_at", UTCDateTime, nullable=False),
    Column("origin", String(16), nullable=False),
    Column("outcome", String(16), nullable=False),  # new | duplicate | changed
    Column("event_id", String(80)),
    Column("remote_addr", String(64)),
    Column("summary", Text, nullable=False),
    Column("raw_body", Text),
)

#: History of every state change, for people and audits.
state_changes = Table(
    "state_changes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("entry_id", Integer, ForeignKey("entries.id"), nullable=False, index=True),
    Column("at", UTCDateTime, nullable=False),
    Column("from_state", String(16)),
    Column("to_state", String(16), nullable=False),
    Column("reason", Text),
)


#: Write-ahead record of everything sent to a sink: Paheko object → sink object, per entry.
#: ``status``: ``sending`` is written before the request leaves, ``done`` (with ``sink_id``) after
#: the answer; a ``sending`` row found later means the outcome is unknown and must be settled by
#: reading the sink back before anything is sent again.
forwards = Table(
    "forwards",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("entry_id", Integer, ForeignKey("entries.id"), nullable=False),
    Column("kind", String(16), nullable=False),  # session | sale | close | document
    Column("paheko_id", Integer, nullable=False),  # session id, or tab id for a sale
    Column("status", String(16), nullable=False),  # sending | done
    Column("sink_id", String(128)),
    Column("idempotency_key", String(128)),
    Column("detail", Text),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("entry_id", "kind", "paheko_id", name="uq_forwards_entry_kind_paheko"),
)


#: Remarks a sink made while delivering (French, for the admin): an orphan session closed in the destination,
#: a ticket found already there, … Shown by ``ledger show``, ``status`` and the module's status route.
notes = Table(
    "notes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("entry_id", Integer, ForeignKey("entries.id"), nullable=False, index=True),
    Column("at", UTCDateTime, nullable=False),
    Column("text", Text, nullable=False),
)


def _v1(conn: Connection) -> None:
    # create_all builds tables as they are today; later migrations skip what already exists.
    metadata.create_all(conn, tables=[meta, entries, notifications, state_changes])


def _v2(conn: Connection) -> None:
    """Mapped documents and the forward log (forwarding exactly once)."""
    if "mapped" not in {c["name"] for c in inspect(conn).get_columns("entries")}:
        conn.exec_driver_sql("ALTER TABLE entries ADD COLUMN mapped TEXT")
    metadata.create_all(conn, tables=[forwards])


def _v3(conn: Connection) -> None:
    """Delivery notes (nothing a sink did in the destination stays unseen)."""
    metadata.create_all(conn, tables=[notes])


#: Forward migrations, in order. Never edit a released one: append a new function.
MIGRATIONS: list[Callable[[Connection], None]] = [_v1, _v2, _v3]
SCHEMA_VERSION = len(MIGRATIONS)


def current_version(conn: Connection) -> int:
    if not conn.dialect.has_table(conn, "meta"):
        return 0
    value = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
    return int(value) if value is not None else 0


def migrate(conn: Connection) -> tuple[int, int]:
    """Apply pending migrations; return (version before, version after)."""
    before = current_version(conn)
    if before > SCHEMA_VERSION:
        raise RuntimeError(
            f"the ledger has schema version {before}, newer than this program's {SCHEMA_VERSION}: upgrade the program"
        )
    for version in range(before + 1, SCHEMA_VERSION + 1):
        MIGRATIONS[version - 1](conn)
        if version == 1:
            conn.execute(meta.insert().values(key="schema_version", value="1"))
        else:
            conn.execute(meta.update().where(meta.c.key == "schema_version").values(value=str(version)))
    return before, SCHEMA_VERSION
