"""The long-running worker process: one lane per source, a poller per source, wake-ups, clean stops.

Isolation between organisations is structural: each source has its own lane (``threads`` worker
threads that claim only that source's entries) and its own poller thread, so a Paheko that hangs
holds its own threads and nobody else's, whatever the number of threads. Within a lane:

- every Paheko read has a total deadline (``[sources.X.paheko] deadline``), retries included;
- a failure of the source itself (Paheko unreachable or failing, sink unreachable) opens the
  source's :class:`Breaker`: the lane and the poller leave the source alone for 5 s, doubling up to
  5 min while it keeps failing, then try one entry; one success closes it. While it is open the
  source's entries are not claimed, so their retry counts are not spent on an outage;
- an idle lane sleeps until the next entry of its source is due or a wake-up rings for it (see
  :mod:`receiver.ledger.wakeup`): a new notification is picked up within milliseconds.

Polls run on their own threads with their own deadline (``POLL_DEADLINE``), never inside processing.

Stopping (SIGTERM): :meth:`Runner.stop` sets the stop event, which ends waits, abandons Paheko
reads in progress (nothing of the step is recorded) and lets each thread finish the step in hand;
after ``grace`` seconds the process exits anyway. Nothing is lost or sent twice either way: every
step commits before the next begins, a request to the sink is written ahead in the forward log and
settled by reading the sink back, and the abandoned claim expires one lease later.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from receiver.config import Config, Source
from receiver.ledger import Ledger
from receiver.ledger.store import utcnow
from receiver.ledger.wakeup import Doorbell
from receiver.reread.client import PahekoCancelled, PahekoClient, PahekoError
from receiver.reread.poller import logged_poll
from receiver.sinks.registry import SinkPool
from receiver.worker import ClaimKeeper, Worker

log = logging.getLogger("receiver.runner")

#: Total seconds one poll of one source may take (it reads ids only: a healthy Paheko answers in ms).
POLL_DEADLINE = 20.0
#: Longest an idle lane sleeps without a wake-up (covers entries released by hand, clock changes).
IDLE_MAX = 10.0
#: How long SIGTERM waits for steps in hand before the process exits regardless.
STOP_GRACE = 6.0


@dataclass
class Breaker:
    """Circuit breaker of one source: closed → open (cool-down, doubling) → half-open (one try) → closed."""

    base: float = 5.0
    cap: float = 300.0
    rng: random.Random = field(default_factory=random.Random)
    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    open_until: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait(self) -> float:
        """Seconds until the source may be tried again (0: go ahead)."""
        with self.lock:
            return max(0.0, self.open_until - self.clock())

    def succeeded(self) -> None:
        with self.lock:
            self.failures = 0
            self.open_until = 0.0

    def failed(self) -> float:
        """Record a failure of the source; return the cool-down now in force."""
        with self.lock:
            self.failures += 1
            cooldown = min(self.cap, self.base * 2 ** (self.failures - 1)) * (0.8 + 0.4 * self.rng.random())
            self.open_until = self.clock() + cooldown
            return cooldown

    @property
    def is_open(self) -> bool:
        return self.wait() > 0


class Runner:
    """Runs every source's lane and poller until :meth:`stop`."""

    def __init__(self, config: Config, ledger: Ledger, *, threads: int = 1,
                 make_worker: Callable[..., Worker] | None = None,
                 poll_client: Callable[[Source], PahekoClient] | None = None,
                 poll: bool = True):
        self.config = config
        self.ledger = ledger
        self.threads = max(1, threads)
        self.stopping = threading.Event()
        self.doorbell = Doorbell()
        self.claims = ClaimKeeper(ledger, _lease(config))
        self.breakers = {name: Breaker() for name in config.sources}
        self.sinks = SinkPool(ledger)  # one per process: threads share each sink and its login
        self._make_worker = make_worker or (lambda **kw: Worker(config, ledger, **kw))
        self._poll_client = poll_client or (
            lambda s: PahekoClient(s.name, s.paheko, deadline=min(POLL_DEADLINE, s.paheko.deadline),
                                   cancel=self.stopping))
        self._poll = poll
        self._threads: list[threading.Thread] = []
        self._workers: list[Worker] = []
        self._stop_listening: Callable[[], None] = lambda: None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> "Runner":
        self._stop_listening = self.ledger.wakeup.listen(self.doorbell)
        for source in self.config.sources.values():
            for n in range(self.threads):
                worker = self._make_worker(claims=self.claims, stop=self.stopping, sinks=self.sinks)
                self._workers.append(worker)
                self._spawn(f"lane-{source.name}-{n}", self._lane, source, worker,
                            self.doorbell.subscribe(source.name))
            if self._poll:
                self._spawn(f"poll-{source.name}", self._poller, source)
        return self

    def _spawn(self, name: str, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def stop(self, grace: float = STOP_GRACE) -> bool:
        """Stop every thread; wait up to ``grace`` seconds for steps in hand. True: all ended."""
        deadline = time.monotonic() + grace
        self.stopping.set()
        self.doorbell.ring()
        self._stop_listening()  # before the joins: its own short join must not add to the grace
        self._stop_listening = lambda: None
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        self.claims.close()
        if alive:
            log.warning("stopping with steps in hand; their claims expire and the next worker resumes them",
                        extra={"event": "stop", "threads": alive})
            return False
        for worker in self._workers:
            worker.close()
        self._workers = []
        self.sinks.close()
        return True

    def __enter__(self) -> "Runner":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- one source's lane ---------------------------------------------------------------------

    def _lane(self, source: Source, worker: Worker, bell: threading.Event) -> None:
        with self.ledger.relaxed():
            self._run_lane(source, worker, bell)

    def _run_lane(self, source: Source, worker: Worker, bell: threading.Event) -> None:
        breaker = self.breakers[source.name]
        stop = self.stopping
        while not stop.is_set():
            cooldown = breaker.wait()
            if cooldown:
                stop.wait(cooldown)
                continue
            bell.clear()  # before looking: a ring from now on means "look again"
            try:
                entry = worker.claim(source=source.name)
            except Exception as exc:  # noqa: BLE001 - a ledger hiccup must not kill the lane
                log.error("claim failed", extra={"event": "claim", "source": source.name, "error": str(exc)})
                stop.wait(1.0)
                continue
            if entry is None:
                bell.wait(self._idle_seconds(source.name))
                continue
            try:
                worker.process_claimed(entry)
            except Exception as exc:  # noqa: BLE001 - logged; the claim is released, the entry stays due
                log.exception("step crashed", extra={"event": "crash", "source": source.name,
                                                     "session_id": entry.session_id, "error": str(exc)})
                stop.wait(1.0)
                continue
            if worker.last_fault:
                pause = breaker.failed()
                log.warning("source failing: paused", extra={"event": "breaker", "source": source.name,
                                                             "seconds": round(pause, 1)})
            elif not stop.is_set():
                breaker.succeeded()

    def _idle_seconds(self, source: str) -> float:
        try:
            due = self.ledger.next_due(source)
        except Exception:  # noqa: BLE001
            return 1.0
        if due is None:
            return IDLE_MAX
        return min(IDLE_MAX, max(0.01, (due - utcnow()).total_seconds()))

    # -- one source's poller -------------------------------------------------------------------

    def _poller(self, source: Source) -> None:
        with self.ledger.relaxed():  # a notification found by a poll and lost to a power cut is found again
            self._run_poller(source)

    def _run_poller(self, source: Source) -> None:
        breaker = self.breakers[source.name]
        client = self._poll_client(source)
        try:
            while not self.stopping.is_set():
                cooldown = breaker.wait()
                if cooldown:
                    self.stopping.wait(cooldown)
                    continue
                try:
                    logged_poll(source, client, self.ledger, log)
                except PahekoCancelled:
                    break
                except PahekoError as exc:
                    if exc.transient:
                        breaker.failed()
                self.stopping.wait(self.config.worker.poll_interval)
        except Exception as exc:  # noqa: BLE001
            log.exception("poller crashed", extra={"event": "poll", "source": source.name, "error": str(exc)})
        finally:
            client.close()


def _lease(config: Config):
    from datetime import timedelta

    return timedelta(seconds=config.worker.lease)
