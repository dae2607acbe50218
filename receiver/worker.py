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
from receiver.outcomes import MustAct, RetryLater
from receiver.sinks import Sink
from receiver.sinks.exactly import ForwardLog
from receiver.sinks.registry import SinkPool
from receiver.reread.client import PahekoAuthError, PahekoClient, PahekoError, PahekoSQLError
from receiver.reread.poller import PollReport, poll_source
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

#: Delay before each retry, in seconds (Svix-like); past the last one the entry is dead (~3.2 days).
RETRY_SCHEDULE = (5, 300, 1800, 7200, 18000, 36000, 36000, 36000, 36000, 36000, 36000, 36000)


def retry_delay(attempt: int, rng: random.Random, retry_after: float | None = None) -> float | None:
    """Seconds before retry number ``attempt`` (1-based), ±20 % jitter; ``None`` when exhausted."""
    if attempt > len(RETRY_SCHEDULE):
        return None
    delay = RETRY_SCHEDULE[attempt - 1] * (0.8 + 0.4 * rng.random())
    return max(delay, retry_after or 0.0)


#: The pipeline's one vocabulary (:mod:`receiver.outcomes`), under the worker's names.
StepFailed = RetryLater
StepHeld = MustAct


@dataclass
class Worker:
    """Processes due ledger entries and polls each source; one instance per thread."""

    config: Config
    ledger: Ledger
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}")
    lease: timedelta = timedelta(minutes=10)
    rng: random.Random = field(default_factory=random.Random)
    client_factory: Callable[[Source], PahekoClient] | None = None
    sink_factory: Callable[[Source], Sink] | None = None
    sinks: SinkPool | None = None  # shared by the worker threads of a process (one Recyclic login)
    metrics: Metrics | None = None
    on_step: Callable[[Entry, str], None] | None = None  # test hook: called after each committed step

    def __post_init__(self) -> None:
        self._clients: dict[str, PahekoClient] = {}
        self._sinks: dict[str, Sink] = {}
        self._own_sinks = False
        self._last_poll: dict[str, float] = {}

    # -- resources, one per source -------------------------------------------------------

    def client(self, source: Source) -> PahekoClient:
        if source.name not in self._clients:
            factory = self.client_factory or (lambda s: PahekoClient(s.name, s.paheko))
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
                report = poll_source(source, self.client(source), self.ledger)
            except PahekoError as exc:  # one unreachable source never stalls the others
                log.warning("poll failed", extra={"event": "poll", "source": source.name, "error": str(exc)})
                continue
            log.info("poll", extra={"event": "poll", "source": source.name, "found": report.found,
                                    "scanned": report.scanned})
            reports.append(report)
        return reports

    # -- processing ----------------------------------------------------------------------

    def run_once(self, *, limit: int | None = None) -> int:
        """Process due entries until none is left (or ``limit``); return how many steps ran."""
        steps = 0
        while limit is None or steps < limit:
            entry = self.ledger.claim(self.name, lease=self.lease)
            if entry is None:
                break
            try:
                self.process(entry)
            finally:
                self.ledger.release_claim(entry.id, self.name)
            steps += 1
        return steps

    def run_forever(self, stop: threading.Event, *, idle: float = 1.0) -> None:
        """Poll and process until ``stop`` is set; finishes the current step before returning."""
        while not stop.is_set():
            self.poll_due_sources()
            if self.run_once(limit=50) == 0:
                stop.wait(idle)

    def process(self, entry: Entry) -> Entry:
        """Run every remaining step of one claimed entry; return it as it ends."""
        source = self.config.sources.get(entry.source)
        if source is None:
            return self._hold(entry, StepHeld(f"La source « {entry.source} » n'est plus dans la configuration du récepteur."))
        while entry.state not in (State.FORWARDED, State.HELD, State.DEAD):
            started = time.perf_counter()
            step = "reread" if entry.snapshot is None else "map" if entry.mapped is None else "forward"
            try:
                entry = getattr(self, f"_{step}")(source, entry)
            except StepHeld as held:
                entry = self._hold(entry, held)
            except StepFailed as failure:
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
            raise StepFailed("La session est encore ouverte dans Paheko : elle sera relue après sa clôture.", str(exc))
        except SessionNotFound as exc:
            raise StepHeld("Cette session n'existe plus dans Paheko (supprimée ?) : rien à transmettre. "
                           "Vérifiez dans Paheko, puis abandonnez-la ou libérez-la.", str(exc))
        except SessionUnreadable as exc:
            raise StepHeld("Paheko n'arrive pas à renvoyer cette session : un texte (nom de note, libellé, "
                           "référence) contient probablement un caractère invalide. Corrigez-le dans Paheko, "
                           "puis libérez la session.", str(exc))
        except PahekoError as exc:
            raise StepFailed("Relecture dans Paheko impossible pour l'instant : " + _french_paheko(exc), str(exc))
        return self.ledger.transition(entry.id, State.SNAPSHOT, snapshot=dump_snapshot(snapshot), last_error=None)

    def _map(self, source: Source, entry: Entry) -> Entry:
        mapped = self.sink(source).map(load_snapshot(entry.snapshot), source)  # MustAct: held
        return self.ledger.transition(entry.id, State.MAPPED, mapped=mapped)

    def _forward(self, source: Source, entry: Entry) -> Entry:
        self.sink(source).deliver(entry, ForwardLog(self.ledger, entry))  # RetryLater / MustAct
        return self.ledger.transition(entry.id, State.FORWARDED, last_error=None, next_attempt_at=None)

    def _hold(self, entry: Entry, held: StepHeld) -> Entry:
        return self.ledger.transition(entry.id, State.HELD, reason=held.reason, last_error=held.detail)

    def _fail(self, entry: Entry, failure: StepFailed) -> Entry:
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
