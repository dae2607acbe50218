"""``paheko-recyclic maintenance backup|restore|prune``: keep the ledger safe and small for years.

- ``backup FILE``: an online, consistent copy of the SQLite ledger (SQLite's backup API: receivers
  and workers keep running), checked with ``PRAGMA integrity_check`` and moved into place atomically.
  A PostgreSQL ledger is backed up with ``pg_dump`` (deploy/README.md).
- ``restore FILE``: copy a backup into the configured SQLite ledger, then migrate it. An existing
  ledger is only overwritten with ``--force``, after a safety copy next to it.
- ``prune``: forget the raw bodies of notifications older than ``[receiver] raw_body_retention_days``
  (default 30); entries, summaries and history stay.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import and_, func, select

from receiver.ledger import tables as t
from receiver.ledger.store import Ledger, utcnow
from receiver.ledger.wakeup import sqlite_path as _sqlite_file


class MaintenanceError(Exception):
    """A maintenance operation refused to run; the message says why and what to do."""


@dataclass(frozen=True)
class LedgerFile:
    """What a SQLite ledger file holds, as checked before and after copying it."""

    path: Path
    schema_version: int
    entries: int


def sqlite_path(ledger_url: str) -> Path:
    """The file of a SQLite ledger URL; :class:`MaintenanceError` for any other database."""
    path = _sqlite_file(ledger_url)
    if path is None:
        raise MaintenanceError(
            "this ledger is not a SQLite file: back up PostgreSQL with pg_dump and restore it with "
            "pg_restore (see deploy/README.md)"
        )
    return Path(path)


def inspect_ledger(path: Path) -> LedgerFile:
    """Check a ledger file (integrity, schema version) without modifying it."""
    if not path.is_file():
        raise MaintenanceError(f"{path} does not exist")
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        try:
            integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
            version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            entries = conn.execute("SELECT count(*) FROM entries").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise MaintenanceError(f"{path} is not a ledger: {exc}") from None
    if integrity != "ok":
        raise MaintenanceError(f"{path} is damaged: {integrity}")
    if version is None:
        raise MaintenanceError(f"{path} is not a ledger: no schema version")
    return LedgerFile(path, int(version[0]), entries)


#: ``progress(done, total)``: pages copied, rows pruned… for a progress bar.
Progress = Callable[[int, int], None]


def _copy(source: Path, target: Path, progress: Progress | None = None) -> None:
    """Copy database ``source`` into ``target`` page by page under SQLite's locks (both may be live)."""
    report = (lambda _status, remaining, total: progress(total - remaining, total)) if progress else None
    with contextlib.closing(sqlite3.connect(f"file:{source}?mode=rw", uri=True, timeout=30)) as src, \
            contextlib.closing(sqlite3.connect(target, timeout=30)) as dst:
        src.backup(dst, pages=1024 if progress else -1, progress=report)


def backup(ledger_url: str, destination: Path, *, force: bool = False, progress: Progress | None = None) -> LedgerFile:
    """Write a consistent copy of the live SQLite ledger to ``destination``."""
    source = sqlite_path(ledger_url)
    if destination.exists() and not force:
        raise MaintenanceError(f"{destination} exists already (use --force to replace it)")
    if not source.is_file():
        raise MaintenanceError(f"no ledger at {source}")
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        _copy(source, partial, progress)
        with contextlib.closing(sqlite3.connect(partial)) as conn:
            conn.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file
        copied = inspect_ledger(partial)
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, destination)
    finally:
        partial.unlink(missing_ok=True)
    return LedgerFile(destination, copied.schema_version, copied.entries)


def restore(backup_file: Path, ledger_url: str, *, force: bool = False,
            progress: Progress | None = None) -> tuple[LedgerFile, Path | None]:
    """Copy ``backup_file`` into the configured ledger and migrate it.

    Returns the restored ledger and the safety copy of the ledger it replaced (``None`` if none).
    """
    target = sqlite_path(ledger_url)
    found = inspect_ledger(backup_file)
    if found.schema_version > t.SCHEMA_VERSION:
        raise MaintenanceError(
            f"{backup_file} has schema version {found.schema_version}, newer than this program's "
            f"{t.SCHEMA_VERSION}: restore it with a newer paheko-recyclic"
        )
    if backup_file.resolve() == target.resolve():
        raise MaintenanceError(f"{backup_file} is the ledger itself")
    safety: Path | None = None
    if target.exists():
        if not force:
            raise MaintenanceError(
                f"a ledger exists at {target}: stop the receiver and the worker, then use --force "
                "(a safety copy of the current ledger is kept next to it)"
            )
        safety = backup(ledger_url, target.with_name(f"{target.name}.before-restore-{utcnow():%Y%m%dT%H%M%SZ}")).path
    target.parent.mkdir(parents=True, exist_ok=True)
    _copy(backup_file, target, progress)
    ledger = Ledger(ledger_url)
    try:
        ledger.migrate()
    finally:
        ledger.close()
    return inspect_ledger(target), safety


def prune_raw_bodies(ledger: Ledger, days: int, *, now: datetime | None = None,
                     progress: Progress | None = None, batch: int = 2000) -> int:
    """Clear ``raw_body`` of notifications received more than ``days`` days ago; how many were cleared.

    Cleared in batches of ``batch`` rows, one short transaction each, so the receiver keeps writing; each
    batch starts after the last one's ids, so rows cleared before are never scanned again.
    """
    cutoff = (now or utcnow()) - timedelta(days=days)
    n = t.notifications.c
    old = and_(n.received_at < cutoff, n.raw_body.is_not(None))
    total = 0
    if progress:  # a count for the bar only: read outside any write transaction
        with ledger.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(t.notifications).where(old)).scalar_one()
    cleared, last = 0, 0
    while True:
        with ledger.transaction() as conn:
            ids = conn.execute(select(n.id).where(old, n.id > last).order_by(n.id).limit(batch)).scalars().all()
            if not ids:
                break
            cleared += conn.execute(t.notifications.update().where(n.id.in_(ids)).values(raw_body=None)).rowcount
        last = ids[-1]
        if progress:
            progress(min(cleared, total), total)
    return cleared


# -- commands ---------------------------------------------------------------------------------
