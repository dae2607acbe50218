"""Pipeline states of a ledger entry, with the French words a Paheko admin reads."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    UNKNOWN = "unknown"  # never stored: the answer for a session the ledger has not seen
    NOTIFIED = "notified"
    SNAPSHOT = "snapshot"
    MAPPED = "mapped"
    FORWARDED = "forwarded"
    HELD = "held"
    FAILED = "failed"
    DEAD = "dead"

    @property
    def label(self) -> str:
        return LABELS[self]


LABELS = {
    State.UNKNOWN: "inconnue du récepteur",
    State.NOTIFIED: "reçue, relecture dans Paheko à venir",
    State.SNAPSHOT: "relue dans Paheko, conversion à venir",
    State.MAPPED: "convertie, transmission à Recyclic en cours",
    State.FORWARDED: "transmise à Recyclic",
    State.HELD: "bloquée : une action est nécessaire",
    State.FAILED: "échec temporaire, nouvel essai programmé",
    State.DEAD: "abandonnée après de nombreux essais",
}

#: States the worker moves forward by itself.
ACTIVE = (State.NOTIFIED, State.SNAPSHOT, State.MAPPED, State.FAILED)
#: States that need a person (or nothing more at all).
SETTLED = (State.FORWARDED, State.HELD, State.DEAD)
