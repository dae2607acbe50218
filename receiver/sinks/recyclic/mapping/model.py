"""A Paheko session in Recyclic's terms, ready for a sink: what to open, which sales to post, how to close,
what was left out and the proof that nothing was lost.

Money is integer cents and weight integer grams throughout; the Recyclic edge converts to euros and
kilograms (``Decimal``). :func:`dump_mapped` / :func:`load_mapped` round-trip through JSON for the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from marshmallow import fields, validate

from receiver.schemas import ModelSchema
from receiver.sinks.recyclic.mapping.config import PROFILES, Profile


@dataclass(frozen=True)
class MappedItem:
    """One sale line. ``weight_grams`` is the line's weight (qty × grams per unit; 0 when not weighed);
    the unit price is derived at the edge as ``total_cents / quantity``. ``notes`` is Paheko's line label."""

    paheko_item_id: int
    category_id: str
    quantity: int
    weight_grams: int
    total_cents: int
    notes: str | None


@dataclass(frozen=True)
class MappedPayment:
    """The takings of one Recyclic payment code in a sale, from one or more Paheko payments.
    ``paheko_amounts_cents[i]`` is the part of payment ``paheko_payment_ids[i]`` forwarded here (the whole
    payment, unless part of it paid a line that was skipped)."""

    code: str
    amount_cents: int
    paheko_payment_ids: tuple[int, ...]
    paheko_amounts_cents: tuple[int, ...] = ()


@dataclass(frozen=True)
class MappedSale:
    """One Paheko tab. Σ items = ``total_cents`` = Σ payments; legacy profile: exactly one payment."""

    tab_id: int
    idempotency_key: str
    note: str
    items: tuple[MappedItem, ...]
    total_cents: int
    payments: tuple[MappedPayment, ...]


@dataclass(frozen=True)
class MappedOpening:
    site_id: str
    register_id: str | None
    operator_id: str
    initial_cents: int
    opened_at: datetime


@dataclass(frozen=True)
class MappedClosing:
    actual_cents: int
    variance_comment: str


@dataclass(frozen=True)
class SkippedPart:
    """One Paheko line (``item_id``) or payment (``payment_id``), or the part of a payment, left out under a
    ``skip`` policy. ``kind`` names the case (a policy name, or ``empty_tab``); ``reason`` is French;
    ``method`` is the Paheko payment method's name for a payment (None for a line)."""

    kind: str
    tab_id: int | None
    item_id: int | None
    payment_id: int | None
    amount_cents: int
    weight_grams: int
    reason: str
    method: str | None = None


@dataclass(frozen=True)
class Tally:
    """A Paheko figure beside what was forwarded and what was skipped."""

    paheko: int
    forwarded: int
    skipped: int

    @property
    def balanced(self) -> bool:
        return self.paheko == self.forwarded + self.skipped


@dataclass(frozen=True, kw_only=True)
class MethodTally(Tally):
    """Payments of one Paheko method, in cents."""

    method_id: int
    method_name: str | None


@dataclass(frozen=True)
class Reconciliation:
    """Forwarded + skipped against Paheko: tabs (count), item totals (cents), weight (grams), payments per
    Paheko method (cents)."""

    tabs: Tally
    items_cents: Tally
    weight_grams: Tally
    payments: tuple[MethodTally, ...]
    balanced: bool


@dataclass(frozen=True)
class MappedSession:
    """``opening`` is None only when the whole session is skipped (unknown location or operator under
    ``skip``); ``closing`` is None unless ``close_session``."""

    source: str
    session_id: int
    profile: Profile
    close_session: bool
    opening: MappedOpening | None
    sales: tuple[MappedSale, ...]
    closing: MappedClosing | None
    skipped: tuple[SkippedPart, ...]
    reconciliation: Reconciliation


# --- schema -------------------------------------------------------------------------------------------------


class _Tuple(fields.List):
    def _deserialize(self, value, attr, data, **kwargs) -> tuple:
        return tuple(super()._deserialize(value, attr, data, **kwargs))


def _int(**kwargs) -> fields.Integer:
    return fields.Integer(required=True, strict=True, **kwargs)


def _text(**kwargs) -> fields.String:
    return fields.String(required=True, **kwargs)


class MappedItemSchema(ModelSchema):
    model = MappedItem
    paheko_item_id = _int()
    category_id = _text()
    quantity = _int()
    weight_grams = _int()
    total_cents = _int()
    notes = _text(allow_none=True)


class MappedPaymentSchema(ModelSchema):
    model = MappedPayment
    code = _text()
    amount_cents = _int()
    paheko_payment_ids = _Tuple(fields.Integer(strict=True), required=True)
    paheko_amounts_cents = _Tuple(fields.Integer(strict=True), required=True)


class MappedSaleSchema(ModelSchema):
    model = MappedSale
    tab_id = _int()
    idempotency_key = _text(validate=validate.Length(min=1, max=128))
    note = _text()
    items = _Tuple(fields.Nested(MappedItemSchema), required=True)
    total_cents = _int()
    payments = _Tuple(fields.Nested(MappedPaymentSchema), required=True)


class MappedOpeningSchema(ModelSchema):
    model = MappedOpening
    site_id = _text()
    register_id = _text(allow_none=True)
    operator_id = _text()
    initial_cents = _int()
    opened_at = fields.AwareDateTime(format="iso", required=True)


class MappedClosingSchema(ModelSchema):
    model = MappedClosing
    actual_cents = _int()
    variance_comment = _text()


class SkippedPartSchema(ModelSchema):
    model = SkippedPart
    kind = _text()
    tab_id = _int(allow_none=True)
    item_id = _int(allow_none=True)
    payment_id = _int(allow_none=True)
    amount_cents = _int()
    weight_grams = _int()
    reason = _text()
    method = fields.String(load_default=None, allow_none=True)


class TallySchema(ModelSchema):
    model = Tally
    paheko = _int()
    forwarded = _int()
    skipped = _int()


class MethodTallySchema(TallySchema):
    model = MethodTally
    method_id = _int()
    method_name = _text(allow_none=True)


class ReconciliationSchema(ModelSchema):
    model = Reconciliation
    tabs = fields.Nested(TallySchema, required=True)
    items_cents = fields.Nested(TallySchema, required=True)
    weight_grams = fields.Nested(TallySchema, required=True)
    payments = _Tuple(fields.Nested(MethodTallySchema), required=True)
    balanced = fields.Boolean(required=True)


class MappedSessionSchema(ModelSchema):
    model = MappedSession
    source = _text()
    session_id = _int()
    profile = _text(validate=validate.OneOf(PROFILES))
    close_session = fields.Boolean(required=True)
    opening = fields.Nested(MappedOpeningSchema, required=True, allow_none=True)
    sales = _Tuple(fields.Nested(MappedSaleSchema), required=True)
    closing = fields.Nested(MappedClosingSchema, required=True, allow_none=True)
    skipped = _Tuple(fields.Nested(SkippedPartSchema), required=True)
    reconciliation = fields.Nested(ReconciliationSchema, required=True)


MAPPED_SCHEMA = MappedSessionSchema()


def dump_mapped(mapped: MappedSession) -> dict[str, Any]:
    """JSON-ready data; :func:`load_mapped` reverses it."""
    return MAPPED_SCHEMA.dump(mapped)


def load_mapped(data: dict[str, Any]) -> MappedSession:
    """Validate and rebuild a :class:`MappedSession` from :func:`dump_mapped` data (also after JSON)."""
    return MAPPED_SCHEMA.load(data)
