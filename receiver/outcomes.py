"""The one vocabulary for how a step ends: **done** (it returns), **retry later**, or **a person must act**.

Every step of the pipeline (re-read, map, forward) and every sink speaks it; the worker turns it into ledger
states (``failed`` with a next attempt, ``held`` with its reason). ``reason`` is French, for the Paheko
admin; ``detail`` is technical, for the operator's logs and ``ledger show``.
"""

from __future__ import annotations


class RetryLater(Exception):
    """Transient: try again later, after at least ``retry_after`` seconds when given. ``source_fault``:
    whether the whole source (its Paheko or its sink) is failing rather than this one session; None lets
    the worker decide from the step."""

    sent = True  # False: the request provably never left (see NotSent)
    counts = True  # False: does not use up the entry's retries (see Waiting)

    def __init__(self, reason: str, detail: str | None = None, retry_after: float | None = None,
                 *, source_fault: bool | None = None):
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail or reason
        self.retry_after = retry_after
        self.source_fault = source_fault


class NotSent(RetryLater):
    """Transient, and nothing left this process (connection refused, DNS, TLS, a failed login): the
    destination cannot have applied anything, so no outcome is left to settle."""

    sent = False


class Waiting(RetryLater):
    """Nothing is wrong with the entry: it waits for something outside it (a destination to be configured).
    Looked at again after ``retry_after`` seconds, without using up its retries."""

    counts = False


class MustAct(Exception):
    """Only a person can unblock this: ``reason`` (French) says what to do."""

    def __init__(self, reason: str, detail: str | None = None):
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail


#: The reason recorded while a session is still open in Paheko (the month report recognises it).
STILL_OPEN = "La session est encore ouverte dans Paheko : elle sera relue après sa clôture."
