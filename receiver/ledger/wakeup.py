"""Waking an idle worker the moment a notification is committed, on both ledger back-ends.

The receiver (``paheko-recyclic run``, another process) and the worker share nothing but the ledger, so the
ledger carries the wake-up:

- **PostgreSQL**: ``pg_notify('paheko_recyclic', source)`` inside the notification's transaction
  (delivered only if it commits, to every worker of every host) and a ``LISTEN`` connection in each
  worker process. That is what LISTEN/NOTIFY is for; nothing to configure.
- **SQLite**: the ledger is a file every process opens, so its directory is shared too. Each worker
  process binds a Unix datagram socket in ``<ledger>.wake/``; after committing, the receiver sends
  the source name to every socket there (non-blocking, one ``sendto`` each, ~10 µs; a socket whose
  worker died is refused and removed). Datagram sockets keep what arrives while the worker is busy,
  so a poke sent between "nothing to claim" and "wait" is not lost. The same directory works across
  processes, systemd units (``PrivateTmp`` hides ``/tmp``, not the state directory) and containers
  sharing the ledger volume, with no port to allocate or firewall. If a poke cannot be delivered
  (permissions, a receiver of an older version), the worker still notices new commits by checking
  ``PRAGMA data_version`` once a second: a read of the WAL index in shared memory, no disk I/O.

Worker side, a :class:`Doorbell` fans a wake-up out to the threads waiting for that source.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from sqlalchemy.engine import make_url

_T = TypeVar("_T")

log = logging.getLogger("receiver.wakeup")

CHANNEL = "paheko_recyclic"
#: How often a SQLite worker checks ``PRAGMA data_version`` in case a poke could not reach it.
FALLBACK_SECONDS = 1.0
#: sun_path holds 108 bytes; longer paths are reached through /proc/self/fd/<directory fd>/.
_SUN_PATH_MAX = 100


class Doorbell:
    """Per-process fan-out: threads :meth:`subscribe` to a source; :meth:`ring` wakes them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str | None, list[threading.Event]] = {}

    def subscribe(self, source: str | None) -> threading.Event:
        """An event set at each ring for ``source`` (or for any source when ``None``) and at every ring-all."""
        event = threading.Event()
        with self._lock:
            self._events.setdefault(source, []).append(event)
        return event

    def ring(self, source: str | None = None) -> None:
        """Wake the threads of ``source``, or every thread when ``source`` is ``None``."""
        with self._lock:
            if source is None:
                targets = [e for events in self._events.values() for e in events]
            else:
                targets = self._events.get(source, []) + self._events.get(None, [])
        for event in targets:
            event.set()


class Wakeup:
    """No wake-up channel (in-memory ledgers): workers find new work at their next timed look."""

    def in_transaction(self, conn, source: str) -> None:
        """Called inside the notification's write transaction."""

    def committed(self, source: str) -> None:
        """Called once the notification is committed; must never raise."""

    def listen(self, doorbell: Doorbell) -> Callable[[], None]:
        """Start ringing ``doorbell`` on every wake-up; returns a function that stops listening."""
        return lambda: None


class PostgresWakeup(Wakeup):
    def __init__(self, engine) -> None:
        self.engine = engine

    def in_transaction(self, conn, source: str) -> None:
        from sqlalchemy import text

        conn.execute(text("SELECT pg_notify(:channel, :source)"), {"channel": CHANNEL, "source": source})

    def listen(self, doorbell: Doorbell) -> Callable[[], None]:
        stop = threading.Event()

        def run() -> None:
            while not stop.is_set():
                try:
                    # A private long-lived connection, outside the pool, with the ledger's own settings.
                    cargs, cparams = self.engine.dialect.create_connect_args(self.engine.url)
                    pg = self.engine.dialect.loaded_dbapi.connect(*cargs, **cparams)
                    pg.autocommit = True
                    pg.execute(f"LISTEN {CHANNEL}")
                    doorbell.ring()  # anything committed before LISTEN took effect
                    while not stop.is_set():
                        for note in pg.notifies(timeout=0.5):
                            doorbell.ring(note.payload or None)
                    pg.close()
                except Exception as exc:  # noqa: BLE001 - a lost connection: reconnect, look for work meanwhile
                    log.warning("LISTEN connection lost: %s", exc, extra={"event": "wakeup", "error": str(exc)})
                    doorbell.ring()
                    stop.wait(1.0)

        thread = threading.Thread(target=run, name="wakeup-listen", daemon=True)
        thread.start()
        return stop.set


class PerProcess(Generic[_T]):
    """Something opened once per process, and again after a fork: a descriptor, its ``flock`` or a socket
    belongs to the process that opened it."""

    def __init__(self, opener: Callable[[], _T]) -> None:
        self._opener = opener
        self._value: _T | None = None
        self._pid = 0

    def get(self) -> _T:
        if self._value is None or self._pid != os.getpid():
            self._value = self._opener()
            self._pid = os.getpid()
        return self._value


def open_file(path: str | Path, flags: int = os.O_RDONLY | os.O_CREAT) -> PerProcess[int]:
    """A descriptor of ``path`` per process (read-only is enough for ``flock``)."""
    return PerProcess(lambda: os.open(path, flags | os.O_CLOEXEC, 0o660))


class _ShortPath:
    """A socket path usable in sun_path, however deep the ledger directory is."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fd = open_file(directory, os.O_RDONLY | os.O_DIRECTORY)

    def __call__(self, name: str) -> str:
        full = str(self.directory / name)
        if len(full.encode()) <= _SUN_PATH_MAX:
            return full
        return f"/proc/self/fd/{self._fd.get()}/{name}"


def _datagram_sender() -> socket.socket:
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender.setblocking(False)
    return sender


class SQLiteWakeup(Wakeup):
    def __init__(self, ledger_path: str) -> None:
        self.ledger_path = ledger_path
        self.directory = Path(ledger_path + ".wake")
        self._path = _ShortPath(self.directory)
        self._sender = PerProcess(_datagram_sender)
        self._lock = threading.Lock()

    def committed(self, source: str) -> None:
        try:
            names = [e.name for e in os.scandir(self.directory) if e.name.endswith(".sock")]
        except OSError:
            return  # no worker has ever listened here
        if not names:
            return
        payload = source.encode()[:200]
        with self._lock:
            sender = self._sender.get()
            for name in names:
                try:
                    sender.sendto(payload, self._path(name))
                except ConnectionRefusedError:  # its worker is gone: tidy up
                    try:
                        os.unlink(self.directory / name)
                    except OSError:
                        pass
                except OSError:  # full (the worker is awake with pokes pending), vanished, not ours: ignore
                    pass

    def listen(self, doorbell: Doorbell) -> Callable[[], None]:
        stop = threading.Event()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        name = f"{os.getpid()}-{id(sock):x}.sock"
        try:
            self.directory.mkdir(mode=0o770, exist_ok=True)
            sock.bind(self._path(name))
        except OSError as exc:
            log.warning("cannot listen for wake-ups; checking the ledger every second instead",
                        extra={"event": "wakeup", "error": str(exc)})
            sock.close()
            sock = None
        watch = sqlite3.connect(self.ledger_path, check_same_thread=False)

        def data_version() -> int:
            return watch.execute("PRAGMA data_version").fetchone()[0]

        def run() -> None:
            seen = data_version()
            while not stop.is_set():
                if sock is not None:
                    ready, _, _ = select.select([sock], [], [], FALLBACK_SECONDS)
                else:
                    ready = []
                    stop.wait(FALLBACK_SECONDS)
                if stop.is_set():
                    break
                if ready:
                    try:
                        payload = sock.recv(256)
                    except OSError:
                        continue
                    doorbell.ring(payload.decode(errors="replace") or None)
                    continue
                now = data_version()
                if now != seen:  # something committed that no poke announced
                    seen = now
                    doorbell.ring()

        thread = threading.Thread(target=run, name="wakeup-listen", daemon=True)
        thread.start()

        def close() -> None:
            stop.set()
            if sock is not None:
                try:
                    sock.sendto(b"", self._path(name))  # end the listener's select now
                except OSError:
                    pass
                try:
                    os.unlink(self.directory / name)
                except OSError:
                    pass
            thread.join(timeout=FALLBACK_SECONDS + 1)
            if sock is not None:
                sock.close()
            watch.close()

        return close


def wakeup_for(url: str, engine) -> Wakeup:
    """The wake-up channel of the ledger at ``url``."""
    if url.startswith("postgresql"):
        return PostgresWakeup(engine)
    path = sqlite_path(url)
    return SQLiteWakeup(path) if path else Wakeup()


def sqlite_path(url: str) -> str | None:
    """The file of a SQLite ledger URL, or ``None`` (in-memory, or not SQLite)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return parsed.database
