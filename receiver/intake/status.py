"""What the module's page shows a Paheko admin about each session, and the texts of its other answers.

The ledger's reasons are written for the person who runs the receiver (they name configuration sections
and commands). A Paheko admin needs other words: what happened, and who must act — themselves (in Paheko
or Recyclic) or "la personne qui gère le récepteur". :func:`session_view` composes, from a ledger entry:

- ``tone`` (``ok``, ``wait``, ``check``, ``error``) and a short ``label`` the module shows as a coloured tag;
- ``admin_reason``: French for the admin, never a configuration key, a TOML section or a command;
- ``forwarded`` / ``left_out``: what reached Recyclic and what was deliberately left out (amount in cents,
  weight in grams, and why, in the admin's words), read from the mapped document in the ledger, so that
  Paheko total = Recyclic total + left out reads on one row.

The operator's ``reason`` stays in the answer (the CLI and logs use it).
"""

from __future__ import annotations

import re

from receiver.ledger import Entry, State
from receiver.sinks.recyclic.mapping.model import load_mapped

RECEIVER_ADMIN = "la personne qui gère le récepteur"

#: State → (tone, short label for the tag).
TAGS = {
    State.UNKNOWN: ("check", "inconnue du récepteur"),
    State.NOTIFIED: ("wait", "en cours"),
    State.SNAPSHOT: ("wait", "en cours"),
    State.MAPPED: ("wait", "en cours"),
    State.FORWARDED: ("ok", "dans Recyclic"),
    State.FAILED: ("wait", "en attente"),
    State.HELD: ("check", "à vérifier"),
    State.DEAD: ("error", "abandonnée"),
}

#: Why a part was left out (``SkippedPart.kind``), as an admin says it.
LEFT_OUT_WORDS = {
    "refunds": "remboursement",
    "membership": "cotisation",
    "debt_wallet": "ardoise ou porte-monnaie",
    "unknown_category": "catégorie sans équivalent dans Recyclic",
    "unknown_method": "moyen de paiement sans équivalent dans Recyclic",
    "unknown_location": "lieu sans équivalent dans Recyclic",
    "unknown_operator": "caissier ou caissière sans équivalent dans Recyclic",
    "mixed_methods": "note payée avec plusieurs moyens",
    "empty_tab": "note vide",
    "empty_payment": "paiement de 0,00 €",
}

# Instructions meant for the receiver's operator, rewritten for a Paheko admin. Order matters: the
# specific ones first. Each pattern matches the end of a sentence written by the mapper, worker or sink.
_REWRITES: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p), r) for p, r in (
    (r"Saisissez-les à la main dans Recyclic, ou écrivez \w+ = \"skip\" dans \[[^\]]*\] pour les écarter en les "
     r"consignant\.",
     f"Saisissez-les à la main dans Recyclic, ou demandez à {RECEIVER_ADMIN} de les écarter (ils seront alors "
     "signalés ici comme non transmis)."),
    (r" : ajoutez-la dans \[[^\]]*categories\]\.",
     f" : {RECEIVER_ADMIN} doit la relier à une catégorie Recyclic."),
    (r" : ajoutez-le dans \[[^\]]*methods\]\.",
     f" : {RECEIVER_ADMIN} doit le relier à un moyen de paiement Recyclic."),
    (r" : ajoutez-le dans \[[^\]]*locations\]\.",
     f" : {RECEIVER_ADMIN} doit le relier à un site Recyclic."),
    (r", et aucun site Recyclic n'est indiqué pour ce cas : renseignez \[[^\]]*\]\.",
     f" : {RECEIVER_ADMIN} doit indiquer le site Recyclic à utiliser dans ce cas."),
    (r" : ajoutez-le dans \[[^\]]*operators\] ou indiquez default_operator\.",
     f" : {RECEIVER_ADMIN} doit le relier à un utilisateur Recyclic."),
    (r",? ?puis libérez-la \(paheko-recyclic ledger release\)\.",
     f", puis demandez à {RECEIVER_ADMIN} de la relancer."),
    (r"Vérifiez dans Paheko, puis abandonnez-la ou libérez-la\.",
     f"Vérifiez dans Paheko, puis prévenez {RECEIVER_ADMIN}."),
    (r",? ?puis libérez la session\.", f", puis demandez à {RECEIVER_ADMIN} de relancer la session."),
    (r"la clé d'API Paheko du récepteur est refusée \(vérifiez api_user / api_password\)\.",
     f"la clé d'API Paheko du récepteur est refusée : {RECEIVER_ADMIN} doit vérifier cette clé "
     "(Configuration › Fonctions avancées › API)."),
    (r"La source « [^»]* » n'est plus dans la configuration du récepteur\.",
     f"Ce Paheko n'est plus dans la configuration du récepteur : prévenez {RECEIVER_ADMIN}."),
    # The caisse calls a ticket a "note"; Recyclic's payment codes are, for an admin, payment methods.
    (r"non relié à un code de paiement Recyclic", "sans équivalent dans Recyclic"),
    (r"non reliée à une catégorie Recyclic", "sans équivalent dans Recyclic"),
    (r"\bTickets\b", "Notes"), (r"\btickets\b", "notes"), (r"\bTicket\b", "Note"), (r"\bticket\b", "note"),
))

#: What must never reach a Paheko admin: configuration syntax, keys and commands of the receiver.
OPERATOR_WORDS = re.compile(
    r"\[[a-z_]+[.\]]|\b\w+ = \"|paheko-recyclic\b|\bapi_(user|password)\b|\busername\b|\bpassword\b|"
    r"\bdefault_operator\b|\bmixed_methods\b|\bpolitique\b|\bsection \[|\.toml\b|\bTOML\b|\bidempotence\b",
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-ZÀ-ÖØ-Þ«])")

GENERIC_HELD = (f"Le récepteur ne peut pas transmettre cette session sans une intervention : prévenez "
                f"{RECEIVER_ADMIN} (le détail est dans son registre).")
GENERIC_FAILED = "Le récepteur n'a pas pu avancer pour l'instant."
WHO_HELD = f"Si vous ne savez pas quoi faire, prévenez {RECEIVER_ADMIN}."


def admin_words(reason: str | None) -> str | None:
    """An operator's reason rewritten for a Paheko admin; sentences that stay technical are dropped."""
    if not reason:
        return None
    text = reason
    for pattern, replacement in _REWRITES:
        text = pattern.sub(replacement, text)
    kept = []
    for sentence in _SENTENCE.split(text.strip()):
        if not OPERATOR_WORDS.search(sentence):
            kept.append(sentence)
            continue
        what = sentence.split(" : ", 1)[0]  # "what happened : what the operator must do"
        if what != sentence and not OPERATOR_WORDS.search(what):
            kept.append(f"{what} : {RECEIVER_ADMIN} doit intervenir.")
    return " ".join(kept) or None


def _admin_reason(entry: Entry | None, state: State) -> str | None:
    if state == State.UNKNOWN:
        return ("Le récepteur n'a pas reçu cette session. Si la colonne Paheko dit qu'elle a été envoyée, "
                "cliquez sur « Renvoyer ».")
    if state in (State.NOTIFIED, State.SNAPSHOT, State.MAPPED):
        return "Reçue par le récepteur, qui la transmet à Recyclic : rien à faire."
    if state == State.FORWARDED:
        return None
    words = admin_words(entry.reason if entry else None)
    if state == State.FAILED:
        return (f"{words or GENERIC_FAILED} Le récepteur réessaiera seul ; si cela dure plus d'une journée, "
                f"prévenez {RECEIVER_ADMIN}.")
    if state == State.DEAD:
        return f"Le récepteur a cessé de réessayer. {words or ''} Prévenez {RECEIVER_ADMIN}.".replace("  ", " ")
    if not words:
        return GENERIC_HELD
    return words if RECEIVER_ADMIN in words else f"{words} {WHO_HELD}"


def _totals(entry: Entry | None) -> tuple[dict | None, dict | None]:
    """(forwarded, left_out) from the mapped document, or (None, None) before mapping."""
    if entry is None or not entry.mapped_json:
        return None, None
    try:
        mapped = load_mapped(entry.mapped)
    except Exception:  # a document from another version: say nothing rather than something wrong
        return None, None
    rec = mapped.reconciliation
    forwarded = {"amount_cents": rec.items_cents.forwarded, "weight_grams": rec.weight_grams.forwarded,
                 "sales": len(mapped.sales)}
    lines = [part for part in mapped.skipped if part.item_id is not None]
    if not mapped.skipped:
        return forwarded, None
    why = list(dict.fromkeys(LEFT_OUT_WORDS.get(part.kind, "non transmissible") for part in mapped.skipped
                             if part.item_id is not None or part.amount_cents))
    left_out = {"amount_cents": rec.items_cents.skipped, "weight_grams": rec.weight_grams.skipped,
                "lines": len(lines), "why": why, "why_text": ", ".join(why)}
    return forwarded, left_out


def session_view(entry: Entry | None, notes: list[str] | None = None) -> dict:
    """One session as the module's page shows it (see the module docstring). ``notes``: what the sink did
    that the admin should know (an orphan session closed in Recyclic, a ticket found already there, …),
    from :meth:`Ledger.notes_for`, in the admin's words."""
    state = entry.state if entry else State.UNKNOWN
    tone, label = TAGS[state]
    # Only a forwarded session has reached Recyclic: before that, the figures are a plan, not a fact.
    forwarded, left_out = _totals(entry) if state == State.FORWARDED else (None, None)
    return {
        "state": state.value,
        "state_label": state.label,
        "reason": entry.reason if entry and state in (State.HELD, State.FAILED, State.DEAD) else None,
        "tone": tone,
        "label": label,
        "admin_reason": _admin_reason(entry, state),
        "forwarded": forwarded,
        "left_out": left_out,
        "notes": [words for words in map(admin_words, notes or []) if words],
    }


# -- texts of the other answers ------------------------------------------------------------

def notification_message(outcome: str, session_id: int) -> str:
    """The answer to a notification; the module prints it as it is (no prefix of its own)."""
    return {
        "new": f"Session {session_id} reçue par le récepteur.",
        "duplicate": f"Session {session_id} déjà reçue par le récepteur : rien de nouveau.",
        "changed": f"Session {session_id} déjà reçue, mais ses chiffres ont changé dans Paheko : le récepteur "
                   "en tient compte.",
    }[outcome]


def ping_message(source: str) -> str:
    """"Tester la connexion": the module prints it as it is (no « Connexion réussie » of its own)."""
    return f"Connexion réussie : le récepteur reconnaît ce Paheko (nom « {source} » dans sa configuration)."
