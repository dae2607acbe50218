"""The durable ledger (step 2 of the flow: notification in → **ledger** → re-read → map → forward)."""

from receiver.ledger.states import State
from receiver.ledger.store import Entry, Ledger, Recorded

__all__ = ["Entry", "Ledger", "Recorded", "State"]
