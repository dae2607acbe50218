"""Listening for a ledger's wake-ups in a test, as the worker's runner does."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from receiver.ledger import Ledger
from receiver.ledger.wakeup import Doorbell


@contextmanager
def listening(url: str, *sources: str) -> Iterator[tuple[Ledger, list]]:
    """A migrated ledger at ``url`` listening for wake-ups, and one event per source in ``sources``."""
    ledger = Ledger(url)
    ledger.migrate()
    doorbell = Doorbell()
    events = [doorbell.subscribe(source) for source in sources]
    stop = ledger.wakeup.listen(doorbell)
    try:
        yield ledger, events
    finally:
        stop()
        ledger.close()
