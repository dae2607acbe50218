"""The snapshot of one closed caisse session, as re-read from Paheko.

A :class:`SessionSnapshot` is everything the mapping needs to describe a session: the session itself,
its location, its cash balances, every tab with its items and payments, and the methods and categories
they reference, plus the figures the receiver recomputed and how they compare with what Paheko stored.
Amounts are integer cents, weights integer grams, datetimes time-zone aware in the source's zone.

:data:`SNAPSHOT_SCHEMA` dumps a snapshot to JSON-ready data (ISO 8601 datetimes with their offset) and
loads it back to an equal snapshot: the ledger stores it as JSON text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from marshmallow import RAISE, Schema, fields, post_load, validate

Layout = Literal["0.8.12+", "legacy"]
LAYOUTS: tuple[str, ...] = ("0.8.12+", "legacy")

# plugin_pos_methods.type
METHOD_TRACKED, METHOD_CASH, METHOD_DEBT, METHOD_WALLET = 0, 1, 2, 3
# plugin_pos_tabs_items.type
ITEM_PRODUCT, ITEM_DEBT_PAYOFF, ITEM_WALLET_TOPUP = 0, 1, 2
# plugin_pos_tabs_items.pricing
PRICING_QTY, PRICING_PER_KG, PRICING_SINGLE = 0, 1, 2


@dataclass(frozen=True)
class Location:
    id: int
    name: str


@dataclass(frozen=True)
class Method:
    """A payment method as Paheko holds it now (``type`` is None if the column does not exist)."""

    id: int
    name: str
    type: int | None
    account: str | None
    id_location: int | None


@dataclass(frozen=True)
class Category:
    id: int
    name: str
    account: str | None


@dataclass(frozen=True)
class Balance:
    """One cash drawer: per cash method (0.8.12+), or the session's single drawer (legacy, ``method_id`` None).

    ``expected_close`` is recomputed: ``open_amount`` + payments in the drawer's method(s) during the session.
    """

    method_id: int | None
    method_name: str | None
    open_amount: int
    close_amount: int | None
    error_amount: int | None
    expected_close: int


@dataclass(frozen=True)
class Item:
    """A tab line. ``name``/``category_name``/``description``/``account`` are Paheko's copies taken at sale time;
    ``product_id`` is None if the product was deleted since; ``category_id`` is the product's category *now*
    (None when the product is gone). ``weight`` is grams per unit (None: not weighed); ``total`` is the line total.
    """

    id: int
    added: datetime
    product_id: int | None
    category_id: int | None
    qty: int
    price: int
    total: int
    weight: int | None
    name: str
    category_name: str
    description: str | None
    account: str | None
    type: int
    pricing: int
    id_fee: int | None
    id_subscription: int | None
    id_parent_item: int | None
    id_method: int | None


@dataclass(frozen=True)
class Payment:
    """A payment on a tab; ``amount`` < 0 is a refund. ``type`` copies the method type (None before 0.8.12)."""

    id: int
    method_id: int
    date: datetime
    amount: int
    reference: str | None
    account: str | None
    type: int | None


@dataclass(frozen=True)
class Tab:
    id: int
    name: str | None
    user_id: int | None
    opened: datetime
    closed: datetime | None
    items: list[Item] = field(default_factory=list)
    payments: list[Payment] = field(default_factory=list)


@dataclass(frozen=True)
class Totals:
    """Figures recomputed from the tabs: sum of item totals, number of tabs, payments per method id,
    and sold weight (sum of qty × grams per unit over weighed items; refunded lines count negative)."""

    items_total: int
    nb_tabs: int
    payments_by_method: dict[int, int]
    weight_grams: int


@dataclass(frozen=True)
class Check:
    """One recomputed figure beside the value Paheko stored; ``ok`` is False on a mismatch."""

    name: str
    stored: int | None
    computed: int
    ok: bool


@dataclass(frozen=True)
class SessionSnapshot:
    source: str
    session_id: int
    caisse_version: str
    layout: Layout
    timezone: str
    opened: datetime
    closed: datetime
    open_user: str | None
    close_user: str | None
    location: Location | None
    result: int | None
    nb_tabs: int | None
    balances: list[Balance]
    tabs: list[Tab]
    methods: dict[int, Method]
    categories: dict[int, Category]
    totals: Totals
    checks: list[Check]

    @property
    def consistent(self) -> bool:
        """True when every recomputed figure matches what Paheko stored."""
        return all(check.ok for check in self.checks)

    def items(self) -> list[Item]:
        """Every item of the session, in tab then item id order."""
        return [item for tab in self.tabs for item in tab.items]

    def payments(self) -> list[Payment]:
        """Every payment of the session, in tab then payment id order."""
        return [payment for tab in self.tabs for payment in tab.payments]


# --- schema -------------------------------------------------------------------------------------------------

Cents = fields.Integer
Grams = fields.Integer


class _Strict(Schema):
    class Meta:
        unknown = RAISE

    model: type = object

    @post_load
    def make(self, data: dict[str, Any], **kwargs) -> Any:
        return self.model(**data)


def _when(**kwargs) -> fields.AwareDateTime:
    return fields.AwareDateTime(format="iso", **kwargs)


def _text(**kwargs) -> fields.String:
    return fields.String(required=True, allow_none=kwargs.pop("allow_none", True), **kwargs)


def _int(**kwargs) -> fields.Integer:
    return fields.Integer(required=True, strict=True, allow_none=kwargs.pop("allow_none", True), **kwargs)


class LocationSchema(_Strict):
    model = Location
    id = _int(allow_none=False)
    name = _text(allow_none=False)


class MethodSchema(_Strict):
    model = Method
    id = _int(allow_none=False)
    name = _text(allow_none=False)
    type = _int()
    account = _text()
    id_location = _int()


class CategorySchema(_Strict):
    model = Category
    id = _int(allow_none=False)
    name = _text(allow_none=False)
    account = _text()


class BalanceSchema(_Strict):
    model = Balance
    method_id = _int()
    method_name = _text()
    open_amount = _int(allow_none=False)
    close_amount = _int()
    error_amount = _int()
    expected_close = _int(allow_none=False)


class ItemSchema(_Strict):
    model = Item
    id = _int(allow_none=False)
    added = _when(required=True)
    product_id = _int()
    category_id = _int()
    qty = _int(allow_none=False)
    price = _int(allow_none=False)
    total = _int(allow_none=False)
    weight = _int()
    name = _text(allow_none=False)
    category_name = _text(allow_none=False)
    description = _text()
    account = _text()
    type = _int(allow_none=False)
    pricing = _int(allow_none=False)
    id_fee = _int()
    id_subscription = _int()
    id_parent_item = _int()
    id_method = _int()


class PaymentSchema(_Strict):
    model = Payment
    id = _int(allow_none=False)
    method_id = _int(allow_none=False)
    date = _when(required=True)
    amount = _int(allow_none=False)
    reference = _text()
    account = _text()
    type = _int()


class TabSchema(_Strict):
    model = Tab
    id = _int(allow_none=False)
    name = _text()
    user_id = _int()
    opened = _when(required=True)
    closed = _when(required=True, allow_none=True)
    items = fields.List(fields.Nested(ItemSchema), required=True)
    payments = fields.List(fields.Nested(PaymentSchema), required=True)


class TotalsSchema(_Strict):
    model = Totals
    items_total = _int(allow_none=False)
    nb_tabs = _int(allow_none=False)
    payments_by_method = fields.Dict(keys=fields.Integer(strict=False), values=fields.Integer(strict=True), required=True)
    weight_grams = _int(allow_none=False)


class CheckSchema(_Strict):
    model = Check
    name = _text(allow_none=False)
    stored = _int()
    computed = _int(allow_none=False)
    ok = fields.Boolean(required=True)


class SessionSnapshotSchema(_Strict):
    model = SessionSnapshot
    source = _text(allow_none=False)
    session_id = _int(allow_none=False)
    caisse_version = _text(allow_none=False)
    layout = fields.String(required=True, validate=validate.OneOf(LAYOUTS))
    timezone = _text(allow_none=False)
    opened = _when(required=True)
    closed = _when(required=True)
    open_user = _text()
    close_user = _text()
    location = fields.Nested(LocationSchema, required=True, allow_none=True)
    result = _int()
    nb_tabs = _int()
    balances = fields.List(fields.Nested(BalanceSchema), required=True)
    tabs = fields.List(fields.Nested(TabSchema), required=True)
    methods = fields.Dict(keys=fields.Integer(strict=False), values=fields.Nested(MethodSchema), required=True)
    categories = fields.Dict(keys=fields.Integer(strict=False), values=fields.Nested(CategorySchema), required=True)
    totals = fields.Nested(TotalsSchema, required=True)
    checks = fields.List(fields.Nested(CheckSchema), required=True)


SNAPSHOT_SCHEMA = SessionSnapshotSchema()


def dump_snapshot(snapshot: SessionSnapshot) -> dict[str, Any]:
    """JSON-ready data (``json.dumps`` it); :func:`load_snapshot` reverses it."""
    return SNAPSHOT_SCHEMA.dump(snapshot)


def load_snapshot(data: dict[str, Any]) -> SessionSnapshot:
    """Validate and rebuild a snapshot from :func:`dump_snapshot` data (also after a JSON round trip)."""
    return SNAPSHOT_SCHEMA.load(data)
