"""The notification contract: what the Paheko module POSTs when a caisse session closes.

This schema is the single reference for both sides: the module's templates build exactly these
fields (a test extracts the module's payload and loads it here). Error messages are French
because they travel back to the Paheko admin's screen.

Brindille literals turn ``-3`` and ``1.5`` into strings, so integer fields accept numeric strings;
unknown fields are ignored so that a newer module can talk to an older receiver.
"""

from __future__ import annotations

import re
from datetime import datetime

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

EVENT_SESSION_CLOSED = "session.closed"
PAHEKO_TIMESTAMP = "%Y-%m-%d %H:%M:%S"
_INTEGER_TEXT = re.compile(r"^\s*-?\d{1,18}\s*$")
#: Paheko's ids and amounts are SQLite INTEGERs: signed 64-bit. Anything wider cannot be one of them.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

MESSAGES = {
    "required": "champ obligatoire manquant",
    "null": "ne peut pas être vide (null)",
    "type": "type invalide",
}


class LenientInteger(fields.Integer):
    """An integer, or a string holding one (Brindille sends ``-3`` as ``"-3"``); never a bool or 1.5."""

    default_error_messages = {
        "invalid": "doit être un nombre entier",
        "too_large": "nombre hors limites (entier de 64 bits attendu)",
    }

    def _validated(self, value):
        if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
            raise self.make_error("invalid")
        if isinstance(value, str) and not _INTEGER_TEXT.match(value):
            raise self.make_error("invalid")
        if not isinstance(value, (int, float, str)):
            raise self.make_error("invalid")
        number = super()._validated(value)
        if not INT64_MIN <= number <= INT64_MAX:
            raise self.make_error("too_large")
        return number


class StorableString(fields.String):
    """Text the ledger can store as-is: valid Unicode (no lone surrogate such as ``"\\ud800"``), no NUL."""

    default_error_messages = {"unstorable": "contient des caractères invalides"}

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if "\x00" in text or not is_storable(text):
            raise self.make_error("unstorable")
        return text


def is_storable(text: str) -> bool:
    """True when ``text`` encodes to UTF-8 (JSON's ``\\ud800`` escapes decode to lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class PahekoTimestamp(fields.NaiveDateTime):
    """Paheko's ``YYYY-MM-DD HH:MM:SS`` local time (ISO 8601 ``T`` form accepted too)."""

    default_error_messages = {"invalid": "doit être une date AAAA-MM-JJ HH:MM:SS"}

    def _deserialize(self, value, attr, data, **kwargs) -> datetime:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        try:
            return datetime.strptime(value.strip().replace("T", " ")[:19], PAHEKO_TIMESTAMP)
        except ValueError:
            raise self.make_error("invalid") from None


def _integer(**kwargs) -> LenientInteger:
    return LenientInteger(strict=False, error_messages=MESSAGES, **kwargs)


def _positive(label: str) -> validate.Range:
    return validate.Range(min=1, error=f"{label} doit être un entier positif")


class MethodTotalSchema(Schema):
    """Total paid with one payment method during the session, in cents (negative for refunds)."""

    class Meta:
        unknown = EXCLUDE

    method_id = _integer(required=True, validate=_positive("l'identifiant du moyen de paiement"))
    method = StorableString(load_default=None, validate=validate.Length(max=200), error_messages=MESSAGES)
    total = _integer(required=True)


class NotificationSchema(Schema):
    """Body of ``POST /api/paheko/caisse/v1/session-closed``.

    Only ``event`` and ``session_id`` are required: the summary figures are a hint used to spot a
    session whose data changed; the receiver re-reads the truth through ``/api/sql``.
    """

    class Meta:
        unknown = EXCLUDE

    event = StorableString(
        required=True,
        validate=validate.OneOf([EVENT_SESSION_CLOSED], error="événement inconnu (attendu : session.closed)"),
        error_messages=MESSAGES,
    )
    session_id = _integer(required=True, validate=_positive("le numéro de session"))
    closed = PahekoTimestamp(load_default=None, error_messages=MESSAGES)
    result = _integer(load_default=None, allow_none=True)
    nb_tabs = _integer(load_default=None, allow_none=True, validate=validate.Range(min=0, error="doit être positif ou nul"))
    payments = fields.List(fields.Nested(MethodTotalSchema), load_default=list, error_messages=MESSAGES)
    module_version = StorableString(load_default=None, allow_none=True, validate=validate.Length(max=40), error_messages=MESSAGES)
    event_id = StorableString(load_default=None, allow_none=True, validate=validate.Length(max=80), error_messages=MESSAGES)


def summary_of(notification: dict) -> dict:
    """The figures that identify a session's content, in a canonical, JSON-ready form.

    Two notifications of one session with different summaries mean the data changed in Paheko.
    Absent figures stay absent so that a sparse notification never looks like a change.
    """
    summary: dict = {}
    if notification.get("closed") is not None:
        summary["closed"] = notification["closed"].strftime(PAHEKO_TIMESTAMP)
    for key in ("result", "nb_tabs"):
        if notification.get(key) is not None:
            summary[key] = notification[key]
    if notification.get("payments"):
        summary["payments"] = sorted(
            ({"method_id": p["method_id"], "total": p["total"]} for p in notification["payments"]),
            key=lambda p: p["method_id"],
        )
    return summary


def french_error(messages: dict) -> str:
    """One French sentence naming every invalid field, from marshmallow's error dict."""
    parts = []

    def walk(node, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, path if key == "_schema" else f"{path}.{key}" if path else str(key))
        elif isinstance(node, list) and node and all(isinstance(m, str) for m in node):
            parts.append(f"champ « {path} » : {' ; '.join(node)}" if path else " ; ".join(node))
        elif isinstance(node, list):
            for item in node:
                walk(item, path)
        else:
            parts.append(f"champ « {path} » : {node}")

    walk(messages, "")
    return "Notification refusée — " + " ; ".join(parts) + "."


_SCHEMA = NotificationSchema()  # stateless: one instance serves every request


def load_notification(body: object) -> dict:
    """Validate a decoded JSON body; raise ``ValueError`` with a French message on bad input."""
    if not isinstance(body, dict):
        raise ValueError("Notification refusée — le corps doit être un objet JSON.")
    try:
        return _SCHEMA.load(body)
    except ValidationError as exc:
        raise ValueError(french_error(exc.messages)) from None
