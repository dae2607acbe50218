"""What differs between Recyclic lines on the wire: ``legacy`` (1.3) and ``v2`` (1.4+).

Bodies are built from the mapped session (integer cents and grams) and converted here, at the edge, to
Recyclic's float euros and float kilograms per line, with exactly the published fields. A
:class:`Profile` also says what each line lets the forwarder find again in Recyclic: v2 back-dates the
opening (``opened_at``, so a session is found by site, register and opening time, whose microseconds carry
a marker of the Paheko session: :func:`opening_marker`) and keeps each sale's ``note`` (so a ticket is
found by the Paheko ids it names); 1.3 does neither.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields

CENT = Decimal("0.01")
NOTE = re.compile(r"^Paheko (\S+) session (\d+) ticket (\d+)$")


def sale_note(source: str, session_id: int, tab_id: int) -> str:
    """The sale's ``note``, by which the forwarder finds a sale back in Recyclic."""
    return f"Paheko {source} session {session_id} ticket {tab_id}"


def parse_sale_note(note: str | None) -> tuple[str, int, int] | None:
    """``(source, session_id, tab_id)`` from a :func:`sale_note`, or None for any other text."""
    match = NOTE.match(note or "")
    return (match[1], int(match[2]), int(match[3])) if match else None


def opening_marker(source: str, session_id: int) -> int:
    """The microseconds (1..999 999) added to Paheko's opening time, whole seconds, in a v2 opening: an
    identity Recyclic keeps (observed: ``opened_at`` read back and listed to the microsecond), so that two
    Paheko sessions opened the same second at the same place never take each other's Recyclic session.
    0 is left to openings sent without a marker (older versions of the receiver)."""
    digest = hashlib.sha256(f"paheko-recyclic:{source}:{session_id}:opening".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 999_999 + 1


def marked_opening_time(opened_at: datetime, source: str, session_id: int) -> datetime:
    """The ``opened_at`` sent to Recyclic: Paheko's second, plus :func:`opening_marker` microseconds."""
    return opened_at.replace(microsecond=opening_marker(source, session_id))


def idempotency_key(source: str, session_id: int, tab_id: int) -> str:
    """Stable per tab (at most 128 characters, as Recyclic keeps)."""
    return f"paheko-recyclic:{source}:{session_id}:{tab_id}"


def euros(cents: int) -> float:
    return float(Decimal(cents) / 100)


def kilograms(grams: int) -> float:
    return float(Decimal(grams) / 1000)


def cents(euros_value: Any) -> int:
    return int((Decimal(str(euros_value)) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def grams(kilograms_value: Any) -> int:
    return int((Decimal(str(kilograms_value)) * 1000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


class _Euros(fields.Field):
    def _serialize(self, value: int, attr, obj, **kwargs) -> float:
        return euros(value)


class _Kilograms(fields.Field):
    def _serialize(self, value: int, attr, obj, **kwargs) -> float:
        return kilograms(value)


class OpenBody(Schema):
    """``POST /cash-sessions/`` under Recyclic 1.3 (no back-dating)."""

    operator_id = fields.String()
    site_id = fields.String()
    register_id = fields.String(allow_none=True)
    initial_amount = _Euros(attribute="initial_cents")


class OpenBodyV2(OpenBody):
    """v2 adds ``opened_at``, with its offset (Paheko's opening time: "saisie différée")."""

    opened_at = fields.AwareDateTime(format="iso")


class ItemBody(Schema):
    category = fields.String(attribute="category_id")
    quantity = fields.Integer()
    weight = _Kilograms(attribute="weight_grams")
    unit_price = fields.Function(
        lambda item: float((Decimal(item.total_cents) / item.quantity / 100).quantize(CENT, ROUND_HALF_UP)))
    total_price = _Euros(attribute="total_cents")
    notes = fields.String(allow_none=True)


class PaymentBody(Schema):
    payment_method = fields.String(attribute="code")
    amount = _Euros(attribute="amount_cents")


class LegacySaleBody(Schema):
    """``POST /sales/`` under 1.3: one payment method per sale, no note."""

    cash_session_id = fields.String()
    items = fields.List(fields.Nested(ItemBody))
    total_amount = _Euros(attribute="total_cents")
    payment_method = fields.Function(lambda data: data["sale"].payments[0].code)


class SaleBody(Schema):
    """``POST /sales/`` under v2: ``payments[]`` and the ``note`` that carries the Paheko ids."""

    cash_session_id = fields.String()
    items = fields.List(fields.Nested(ItemBody))
    total_amount = _Euros(attribute="total_cents")
    payments = fields.List(fields.Nested(PaymentBody))
    note = fields.String()


class CloseBody(Schema):
    actual_amount = _Euros(attribute="actual_cents")
    variance_comment = fields.String()


@dataclass(frozen=True)
class Profile:
    name: str
    open_body: Schema
    sale_body: Schema
    backdated_opening: bool  # the opening carries Paheko's time: a session can be found again by it
    keeps_note: bool  # a sale's note is stored: a ticket can be found again by it


PROFILES: dict[str, Profile] = {
    "v2": Profile("v2", OpenBodyV2(), SaleBody(), backdated_opening=True, keeps_note=True),
    "legacy": Profile("legacy", OpenBody(), LegacySaleBody(), backdated_opening=False, keeps_note=False),
}
CLOSE_BODY = CloseBody()


def sale_shape(body: dict[str, Any]) -> tuple:
    """What identifies a sale's content, from the body sent or from ``GET /sales/{id}``."""
    items = sorted((str(i.get("category")), int(i.get("quantity") or 0), cents(i.get("total_price") or 0),
                    grams(i.get("weight") or 0)) for i in body.get("items") or [])
    return cents(body.get("total_amount") or 0), str(body.get("payment_method") or "").lower(), tuple(items)


# -- what is read back (loose: Recyclic adds fields from version to version) -----------------------------


class _Loose(Schema):
    class Meta:
        unknown = EXCLUDE


class RemoteSale(_Loose):
    id = fields.String(required=True)
    note = fields.String(load_default=None, allow_none=True)
    total_amount = fields.Float(load_default=None, allow_none=True)


class RemoteSession(_Loose):
    """``GET /cash-sessions/{id}`` (with its sales) or one row of ``GET /cash-sessions/`` (without)."""

    id = fields.String(required=True)
    status = fields.String(required=True)
    site_id = fields.String(load_default=None, allow_none=True)
    register_id = fields.String(load_default=None, allow_none=True)
    operator_id = fields.String(load_default=None, allow_none=True)
    opened_at = fields.String(load_default=None, allow_none=True)
    number_of_sales = fields.Integer(load_default=None, allow_none=True)
    sales = fields.List(fields.Nested(RemoteSale), load_default=None, allow_none=True)


class Created(_Loose):
    id = fields.String(required=True)


REMOTE_SESSION = RemoteSession()
CREATED = Created()


def load_remote(schema: Schema, data: Any) -> dict[str, Any] | None:
    """``data`` read with ``schema``, or ``None`` when it is not the expected shape."""
    try:
        return schema.load(data if isinstance(data, dict) else {})
    except ValidationError:
        return None
