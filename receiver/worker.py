"""The worker: drives each ledger entry through notified → snapshot → mapped → forwarded.

Each step reads what the previous one stored in the ledger and commits its own result before
the next one starts, so a worker killed at any instant resumes where it stopped. Which step an
entry needs is derived from what it holds (no snapshot → re-read; no mapped document → map;
otherwise → forward). Failures are rescheduled on a Svix-like schedule (about three days in all)
before the entry is declared dead; problems only a person can solve put the entry on hold.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from receiver.config import Config, Source
from receiver.ledger import Entry, Ledger, State
from receiver.ledger.store import utcnow
from receiver.outcomes import STILL_OPEN, MustAct, RetryLater
from receiver.sinks import Sink
from receiver.sinks.exactly import ForwardLog
from receiver.sinks.registry import SinkPool
from receiver.reread.client import PahekoAuthError, PahekoCancelled, PahekoClient, PahekoError, PahekoSQLError
from receiver.reread.poller import PollReport, logged_poll
from receiver.services import Metrics
from receiver.reread.snapshot import (
    SessionNotFound,
    SessionOpen,
    SessionUnreadable,
    dump_snapshot,
    load_snapshot,
    read_session,
)

log = logging.getLogger("receiver.worker")

class ClaimKeeper:
    """The heartbeat of one process's claims: renews them every third of the lease while they are held.

    Claims are short (``[worker] lease``, 15 s by default) so that the entry of a worker killed
    without warning is taken over within seconds; a live worker keeps its claim however long a
    step lasts. A claim found taken by someone else (this process was frozen past its lease) is
    reported by :meth:`lost`, and the worker drops the entry at its next step.
    """

    def __init__(self, ledger: Ledger, lease: timedelta):
        self.ledger = ledger
        self.lease = lease
        self._held: dict[int, str] = {}
        self._lost: set[int] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def hold(self, entry_id: int, worker: str) -> None:
        with self._lock:
            self._held[entry_id] = worker
            self._lost.discard(entry_id)
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="claim-heartbeat", daemon=True)
                self._thread.start()

    def drop(self, entry_id: int) -> None:
        with self._lock:
            self._held.pop(entry_id, None)
            self._lost.discard(entry_id)

    def lost(self, entry_id: int) -> bool:
        with self._lock:
            return entry_id in self._lost

    def renew(self) -> None:
        with self._lock:
            held = dict(self._held)
        if not held:
            return
        with self.ledger.relaxed():
            kept = self.ledger.renew_claims(held, lease=self.lease)
        with self._lock:
            self._lost.update(i for i in held if i not in kept and i in self._held)

    def _run(self) -> None:
        interval = max(self.lease.total_seconds() / 3, 0.05)
        while not self._wake.wait(interval):
            try:
                self.renew()
            except Exception as exc:  # noqa: BLE001 - a ledger hiccup: the next beat retries
                log.warning("claim renewal failed", extra={"event": "heartbeat", "error": str(exc)})

    def close(self) -> None:
        self._closed = True
        self._wake.set()

#: Delay before each retry, in seconds (Svix-like); past the last one the entry is dead (~3.2 days).
RETRY_SCHEDULE = (5, 300, 1800, 7200, 18000, 36000, 36000, 36000, 36000, 36000, 36000, 36000)


def retry_delay(attempt: int, rng: random.Random, retry_after: float | None = None) -> float | None:
    """Seconds before retry number ``attempt`` (1-based), ±20 % jitter; ``None`` when exhausted."""
    if attempt > len(RETRY_SCHEDULE):
        return None
    delay = RETRY_SCHEDULE[attempt - 1] * (0.8 + 0.4 * rng.random())
    return max(delay, retry_after or 0.0)


class Interrupted(Exception):
    """The worker is stopping, or lost its claim, in the middle of a step: nothing of it was recorded."""


def is_source_fault(failure: RetryLater, step: str) -> bool:
    """Whether a failure is the source's own (its Paheko or its sink unreachable or failing) rather than
    this one session's (still open in Paheko, waiting for a destination): the runner then pauses the
    whole source. A re-read says so explicitly; a forward that must be retried is the sink's fault."""
    if failure.source_fault is not None:
        return failure.source_fault
    return step == "forward" and failure.counts


@dataclass
class Worker:
    """Processes due ledger entries and polls each source; one instance per thread."""

    config: Config
    ledger: Ledger
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}")
    lease: timedelta | None = None  # default: [worker] lease
    rng: random.Random = field(default_factory=random.Random)
    client_factory: Callable[[Source], PahekoClient] | None = None
    sink_factory: Callable[[Source], Sink] | None = None
    sinks: SinkPool | None = None  # shared by the worker threads of a process (one Recyclic login)
    metrics: Metrics | None = None
    on_step: Callable[[Entry, str], None] | None = None  # test hook: called after each committed step
    claims: ClaimKeeper | None = None  # shared by a process's workers; default: one of its own
    stop: threading.Event | None = None  # set: Paheko reads in progress are abandoned (Interrupted)
    #: Whether the last process() ended on a failure of the source itself (see is_source_fault).
    last_fault: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.lease is None:
            self.lease = timedelta(seconds=self.config.worker.lease)
        if self.claims is None:
            self.claims = ClaimKeeper(self.ledger, self.lease)
            self._own_claims = True
        else:
            self._own_claims = False
        self._clients: dict[str, PahekoClient] = {}
        self._sinks: dict[str, Sink] = {}
        self._own_sinks = False
        self._last_poll: dict[str, float] = {}

    # -- resources, one per source -------------------------------------------------------

    def client(self, source: Source) -> PahekoClient:
        if source.name not in self._clients:
            factory = self.client_factory or (lambda s: PahekoClient(s.name, s.paheko, cancel=self.stop))
            self._clients[source.name] = factory(source)
        return self._clients[source.name]

    def sink(self, source: Source) -> Sink:
        if self.sink_factory is None and self.sinks is None:
            self.sinks = SinkPool(self.ledger)
            self._own_sinks = True
        if self.sink_factory is None:
            return self.sinks.get(source)
        if source.name not in self._sinks:
            self._sinks[source.name] = self.sink_factory(source)
        return self._sinks[source.name]

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        for sink in self._sinks.values():
            sink.close()
        if self._own_sinks and self.sinks is not None:
            self.sinks.close()
        if self._own_claims:
            self.claims.close()

    # -- polling -------------------------------------------------------------------------

    def poll_due_sources(self, *, force: bool = False) -> list[PollReport]:
        """Run the reconciliation poll for every source whose interval has elapsed."""
        reports = []
        now = time.monotonic()
        for source in self.config.sources.values():
            last = self._last_poll.get(source.name)
            if not force and last is not None and now - last < self.config.worker.poll_interval:
                continue
            self._last_poll[source.name] = now
            try:
                reports.append(logged_poll(source, self.client(source), self.ledger, log))
            except PahekoError:  # one unreachable source never stalls the others
                continue
        return reports

    # -- processing ----------------------------------------------------------------------

    def run_once(self, *, limit: int | None = None, source: str | None = None) -> int:
        """Process due entries (of ``source``) until none is left (or ``limit``); return how many ran."""
        steps = 0
        while limit is None or steps < limit:
            if self.stop is not None and self.stop.is_set():
                break
            entry = self.claim(source=source)
            if entry is None:
                break
            self.process_claimed(entry)
            steps += 1
        return steps

    def claim(self, *, source: str | None = None, entry_id: int | None = None) -> Entry | None:
        """Claim a due entry (kept alive by the heartbeat until :meth:`process_claimed` releases it)."""
        with self.ledger.relaxed():
            entry = self.ledger.claim(self.name, lease=self.lease, source=source, entry_id=entry_id)
        if entry is not None:
            self.claims.hold(entry.id, self.name)
        return entry

    def process_claimed(self, entry: Entry) -> Entry:
        """Process a claimed entry, then release the claim (also when stopping or failing).

        Its ledger writes are :meth:`~receiver.ledger.Ledger.relaxed`: redone if a power cut loses them.
        """
        with self.ledger.relaxed():
            return self._process_claimed(entry)

    def _process_claimed(self, entry: Entry) -> Entry:
        try:
            return self.process(entry)
        except Interrupted as exc:
            log.warning("step interrupted", extra={"event": "interrupted", "source": entry.source,
                                                   "session_id": entry.session_id, "error": str(exc)})
            return entry
        finally:
            self.claims.drop(entry.id)
            self.ledger.release_claim(entry.id, self.name)

    def process(self, entry: Entry) -> Entry:
        """Run every remaining step of one claimed entry; return it as it ends."""
        source = self.config.sources.get(entry.source)
        self.last_fault = False
        if source is None:
            return self._hold(entry, MustAct(f"La source « {entry.source} » n'est plus dans la configuration du récepteur."))
        while entry.state not in (State.FORWARDED, State.HELD, State.DEAD):
            if self.claims.lost(entry.id):
                raise Interrupted(f"claim on entry {entry.id} lost (lease expired): another worker may have it")
            started = time.perf_counter()
            step = "reread" if entry.snapshot is None else "map" if entry.mapped is None else "forward"
            try:
                entry = getattr(self, f"_{step}")(source, entry)
            except MustAct as held:
                entry = self._hold(entry, held)
            except RetryLater as failure:
                self.last_fault = is_source_fault(failure, step)
                entry = self._fail(entry, failure)
            self._count(step, entry)
            log.info(step, extra={"event": step, "source": entry.source, "session_id": entry.session_id,
                                  "state": entry.state.value,
                                  "duration_ms": round((time.perf_counter() - started) * 1000, 2)})
            if self.on_step:
                self.on_step(entry, step)
            if entry.state == State.FAILED:
                break
        return entry

    def _count(self, step: str, entry: Entry) -> None:
        """Count a re-read or forward outcome (ok, failed, held, dead) for /metrics."""
        counter = {"reread": "snapshots", "forward": "forwards"}.get(step)
        if self.metrics is None or counter is None:
            return
        outcome = {State.FAILED: "failed", State.HELD: "held", State.DEAD: "dead"}.get(entry.state, "ok")
        getattr(self.metrics, counter).labels(source=entry.source, outcome=outcome).inc()

    def _reread(self, source: Source, entry: Entry) -> Entry:
        try:
            snapshot = read_session(self.client(source), entry.session_id, source.timezone)
        except SessionOpen as exc:
            raise RetryLater(STILL_OPEN, str(exc))
        except SessionNotFound as exc:
            raise MustAct("Cette session n'existe plus dans Paheko (supprimée ?) : rien à transmettre. "
                           "Vérifiez dans Paheko, puis abandonnez-la ou libérez-la.", str(exc))
        except SessionUnreadable as exc:
            raise MustAct("Paheko n'arrive pas à renvoyer cette session : un texte (nom de note, libellé, "
                           "référence) contient probablement un caractère invalide. Corrigez-le dans Paheko, "
                           "puis libérez la session.", str(exc))
        except PahekoCancelled as exc:
            raise Interrupted(str(exc)) from exc
        except PahekoError as exc:
            raise RetryLater("Relecture dans Paheko impossible pour l'instant : " + _french_paheko(exc), str(exc),
                             source_fault=exc.transient) from exc
        return self.ledger.transition(entry.id, State.SNAPSHOT, snapshot=dump_snapshot(snapshot), last_error=None)

    def _map(self, source: Source, entry: Entry) -> Entry:
        mapped = self.sink(source).map(load_snapshot(entry.snapshot), source)  # MustAct: held
        return self.ledger.transition(entry.id, State.MAPPED, mapped=mapped)

    def _forward(self, source: Source, entry: Entry) -> Entry:
        self.sink(source).deliver(entry, ForwardLog(self.ledger, entry))  # RetryLater / MustAct
        return self.ledger.transition(entry.id, State.FORWARDED, last_error=None, next_attempt_at=None)

    def _hold(self, entry: Entry, held: MustAct) -> Entry:
        return self.ledger.transition(entry.id, State.HELD, reason=held.reason, last_error=held.detail)

    def _fail(self, entry: Entry, failure: RetryLater) -> Entry:
        if not failure.counts:  # waiting (no destination configured): looked at again, retries untouched
            return self.ledger.transition(
                entry.id, State.FAILED, reason=failure.reason, last_error=failure.detail,
                next_attempt_at=utcnow() + timedelta(seconds=failure.retry_after or self.config.worker.poll_interval))
        attempts = entry.attempts + 1
        delay = retry_delay(attempts, self.rng, failure.retry_after)
        if delay is None:
            return self.ledger.transition(
                entry.id, State.DEAD, attempts=attempts, last_error=failure.detail, next_attempt_at=None,
                reason=f"Abandonnée après {attempts - 1} nouveaux essais : {failure.reason}",
            )
        return self.ledger.transition(
            entry.id, State.FAILED, reason=failure.reason, attempts=attempts, last_error=failure.detail,
            next_attempt_at=utcnow() + timedelta(seconds=delay),
        )


def _french_paheko(exc: PahekoError) -> str:
    if isinstance(exc, PahekoAuthError):
        return "la clé d'API Paheko du récepteur est refusée (vérifiez api_user / api_password)."
    if isinstance(exc, PahekoSQLError):
        return "Paheko refuse la requête de lecture (extension Caisse absente ou d'une version inattendue)."
    return "Paheko ne répond pas correctement (réseau, maintenance ou surcharge)."
