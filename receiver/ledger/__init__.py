"""The durable ledger (step 2 of the flow: notification in → **ledger** → re-read → map → forward)."""

from receiver.ledger.states import State
from receiver.ledger.store import Entry, Forward, Ledger, Recorded

__all__ = ["Entry", "Forward", "Ledger", "Recorded", "State"]
