"""The snapshot of one closed caisse session, as re-read from Paheko.

A :class:`SessionSnapshot` is everything the mapping needs to describe a session: the session itself,
its location, its cash balances, every tab with its items and payments, and the methods and categories
they reference, plus the figures the receiver recomputed and how they compare with what Paheko stored.
Amounts are integer cents, weights integer grams, datetimes time-zone aware in the source's zone.

:data:`SNAPSHOT_SCHEMA` dumps a snapshot to JSON-ready data (ISO 8601 datetimes with their offset) and
loads it back to an equal snapshot: the ledger stores it as JSON text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from marshmallow import ValidationError, fields, validate

from receiver.schemas import ModelSchema
from receiver.reread.client import PahekoBrokenResponse, PahekoClient, PahekoError, PahekoSQLError
from receiver.reread.queries import (
    LEGACY_ABSENT,
    LIST_COLUMNS,
    OPTIONAL_COLUMNS,
    OPTIONAL_TABLES,
    CaisseSchema,
    body_sql,
    missing_column,
    missing_table,
    probe_sql,
    session_lists,
    split_probe,
)

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



def _when(**kwargs) -> fields.AwareDateTime:
    return fields.AwareDateTime(format="iso", **kwargs)


def _text(**kwargs) -> fields.String:
    return fields.String(required=True, allow_none=kwargs.pop("allow_none", True), **kwargs)


def _int(**kwargs) -> fields.Integer:
    return fields.Integer(required=True, strict=True, allow_none=kwargs.pop("allow_none", True), **kwargs)


class LocationSchema(ModelSchema):
    model = Location
    id = _int(allow_none=False)
    name = _text(allow_none=False)


class MethodSchema(ModelSchema):
    model = Method
    id = _int(allow_none=False)
    name = _text(allow_none=False)
    type = _int()
    account = _text()
    id_location = _int()


class CategorySchema(ModelSchema):
    model = Category
    id = _int(allow_none=False)
    name = _text(allow_none=False)
    account = _text()


class BalanceSchema(ModelSchema):
    model = Balance
    method_id = _int()
    method_name = _text()
    open_amount = _int(allow_none=False)
    close_amount = _int()
    error_amount = _int()
    expected_close = _int(allow_none=False)


class ItemSchema(ModelSchema):
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


class PaymentSchema(ModelSchema):
    model = Payment
    id = _int(allow_none=False)
    method_id = _int(allow_none=False)
    date = _when(required=True)
    amount = _int(allow_none=False)
    reference = _text()
    account = _text()
    type = _int()


class TabSchema(ModelSchema):
    model = Tab
    id = _int(allow_none=False)
    name = _text()
    user_id = _int()
    opened = _when(required=True)
    closed = _when(required=True, allow_none=True)
    items = fields.List(fields.Nested(ItemSchema), required=True)
    payments = fields.List(fields.Nested(PaymentSchema), required=True)


class TotalsSchema(ModelSchema):
    model = Totals
    items_total = _int(allow_none=False)
    nb_tabs = _int(allow_none=False)
    payments_by_method = fields.Dict(keys=fields.Integer(strict=False), values=fields.Integer(strict=True), required=True)
    weight_grams = _int(allow_none=False)


class CheckSchema(ModelSchema):
    model = Check
    name = _text(allow_none=False)
    stored = _int()
    computed = _int(allow_none=False)
    ok = fields.Boolean(required=True)


class SessionSnapshotSchema(ModelSchema):
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


# --- reading a session from Paheko ------------------------------------------------------------------------


class SessionUnavailable(Exception):
    """The session cannot be snapshot (yet, or ever); subclasses say why. Not a failure of Paheko itself."""

    def __init__(self, message: str, source: str, session_id: int):
        super().__init__(message)
        self.source = source
        self.session_id = session_id


class SessionOpen(SessionUnavailable):
    """The session is still open in Paheko: read it again after it closes."""

    def __init__(self, source: str, session_id: int, opened: datetime):
        super().__init__(f"session {session_id} of source {source!r} is still open (opened {opened})", source, session_id)
        self.opened = opened


class SessionNotFound(SessionUnavailable):
    """No such session: never created, or deleted by an accounting admin (possible while not yet booked)."""

    def __init__(self, source: str, session_id: int, max_id: int | None):
        super().__init__(
            f"session {session_id} does not exist in Paheko for source {source!r} (highest session id: {max_id}); "
            "it was deleted in Paheko, or the id is wrong",
            source,
            session_id,
        )
        self.max_id = max_id


class SessionUnreadable(SessionUnavailable):
    """Paheko keeps failing to return this session's data (see ``cause``), typically because a text value in it
    is not valid UTF-8 (Paheko then sends a 200 with broken JSON). Fix the value in Paheko; reading again is
    pointless until then, but harmless."""

    def __init__(self, message: str, source: str, session_id: int, cause: Exception):
        super().__init__(message, source, session_id)
        self.cause = cause


class CaisseUnavailable(PahekoError):
    """The caisse plugin is not installed, or its tables lack what a session read needs."""


class SnapshotIncomplete(PahekoError):
    """The pages did not add up to the counts Paheko gave: the data moved during the read. Transient."""

    transient = True


def read_session(client: PahekoClient, session_id: int, tz: ZoneInfo, *, page_size: int = 5000) -> SessionSnapshot:
    """Re-read closed session ``session_id`` through ``client`` and return its validated snapshot.

    Usually two ``/api/sql`` requests (a probe, then the whole body as JSON); one more per missing optional
    table on old caisse versions, and one more per ``page_size`` rows of the longest list.
    Raises :class:`SessionOpen`, :class:`SessionNotFound`, :class:`SessionUnreadable` (the outcomes), or a
    :class:`PahekoError` (:class:`CaisseUnavailable` when the plugin is missing).
    """
    if type(session_id) is not int or session_id < 1:
        raise ValueError(f"session id must be a positive integer, got {session_id!r}")
    if page_size < 1:
        raise ValueError("page_size must be positive")
    try:
        return _read(client, session_id, tz, page_size)
    except PahekoBrokenResponse as exc:
        raise SessionUnreadable(
            f"Paheko sent broken JSON {exc.attempts} times in a row for session {session_id} of source "
            f"{client.source!r}. A cut connection would not repeat like this: most likely a text in this session "
            "(tab name, item label or description, payment reference, user name) is not valid UTF-8, which "
            "Paheko cannot encode. Correct that text in Paheko; the session will then be read normally.",
            client.source,
            session_id,
            exc,
        ) from exc


def _read(client: PahekoClient, session_id: int, tz: ZoneInfo, page_size: int) -> SessionSnapshot:
    scalars, tables, session = _probe(client, session_id)
    version = scalars["version"]
    source = client.source
    if session.get("id") is None:
        raise SessionNotFound(source, session_id, scalars["max_id"])
    opened = _aware(session["opened"], tz)
    if session.get("closed") is None:
        raise SessionOpen(source, session_id, opened)
    layout: Layout = "0.8.12+" if "sessions_balances" in tables and "result" in session else "legacy"
    schema = CaisseSchema(tables, {t: frozenset(c) for t, c in LEGACY_ABSENT.items()} if layout == "legacy" else {})
    lists, schema = _read_lists(client, session_id, schema, frozenset(session), page_size)
    if lists is None:  # deleted while we were reading it
        raise SessionNotFound(source, session_id, scalars["max_id"])
    try:
        return _assemble(source, session_id, str(version), layout, tz, session, lists)
    except ValidationError as exc:
        raise SessionUnreadable(
            f"session {session_id} of source {source!r} has data this receiver does not understand: "
            f"{exc.messages}",
            source,
            session_id,
            exc,
        ) from exc


def _probe(client: PahekoClient, session_id: int) -> tuple[dict, frozenset[str], dict]:
    """The probe row: scalars, the optional tables present, and the session row (all keys, NULLs if absent)."""
    tables = OPTIONAL_TABLES
    while True:
        try:
            result = client.sql(probe_sql(session_id, tables), complete=True)
            break
        except PahekoSQLError as exc:
            table = missing_table(exc.paheko_message)
            if table not in tables:
                raise _incompatible(exc) from exc
            tables = tuple(t for t in tables if t != table)
    scalars, session = split_probe(result.rows[0])
    if scalars.get("version") is None:
        raise CaisseUnavailable(
            "the caisse plugin is not installed in this Paheko (no 'caisse' row in plugins)", result.request
        )
    return scalars, frozenset(tables), session


def _incompatible(exc: PahekoSQLError) -> CaisseUnavailable:
    return CaisseUnavailable(
        f"the caisse plugin's tables are missing or differ from every known version ({exc.paheko_message}); "
        "check that the caisse extension is installed in this Paheko",
        exc.request,
        status=exc.status,
    )


def _read_lists(
    client: PahekoClient, session_id: int, schema: CaisseSchema, session_columns: frozenset[str], page_size: int
) -> tuple[dict[str, list[list]] | None, CaisseSchema]:
    """Every list of the session as rows (lists of values); None if the session vanished meanwhile. A missing
    optional column is dropped from the schema and the read starts again."""
    while True:
        try:
            return _pages(client, session_id, session_lists(session_id, schema, session_columns), page_size), schema
        except PahekoSQLError as exc:
            found = missing_column(exc.paheko_message)
            if found is None or found[1] not in OPTIONAL_COLUMNS.get(found[0], ()) or not schema.has(*found):
                raise _incompatible(exc) from exc
            schema = schema.without(*found)


def _pages(client: PahekoClient, session_id: int, queries: list, page_size: int) -> dict[str, list[list]] | None:
    rows: dict[str, list[list]] = {q.name: [] for q in queries}
    cursor = {q.name: 0 for q in queries}
    counts: dict[str, int] = {}
    pending = list(queries)
    while pending:
        sql = body_sql(session_id, [(q, cursor[q.name]) for q in pending], page_size, not counts)
        row = client.sql(sql, complete=True).rows[0]
        if row["closed"] is None:
            return None
        if not counts:
            counts = {q.name: int(row[f"n_{q.name}"]) for q in queries}
        still = []
        for query in pending:
            page = json.loads(row[query.name])
            rows[query.name].extend(page)
            if page:
                cursor[query.name] = max(values[0] for values in page)
            if len(rows[query.name]) >= counts[query.name]:
                continue
            if len(page) < page_size:
                raise SnapshotIncomplete(
                    f"Paheko returned {len(rows[query.name])} {query.name} for session {session_id} but counted "
                    f"{counts[query.name]}: the data changed during the read; it will be read again",
                    client.request_for(sql),
                )
            still.append(query)
        pending = still
    return rows


def _aware(text: str, tz: ZoneInfo) -> datetime:
    """Paheko's naive local ``YYYY-MM-DD HH:MM:SS`` as an aware datetime in the source's zone (fold=0 in the
    repeated autumn hour, as Paheko itself cannot tell)."""
    value = datetime.fromisoformat(text)
    return value.replace(tzinfo=tz) if value.tzinfo is None else value.astimezone(tz)


def _iso(text: str | None, tz: ZoneInfo) -> str | None:
    return None if text is None else _aware(text, tz).isoformat()


def _named(table: str, rows: list[list], extra: tuple[str, ...] = ()) -> list[dict]:
    names = LIST_COLUMNS[table] + extra
    return [dict(zip(names, values, strict=True)) for values in rows]


def _assemble(
    source: str, session_id: int, version: str, layout: Layout, tz: ZoneInfo, session: dict, lists: dict
) -> SessionSnapshot:
    items_by_tab: dict[int, list[dict]] = {}
    for row in sorted(_named("tabs_items", lists["items"], ("category",)), key=lambda r: r["id"]):
        items_by_tab.setdefault(row["tab"], []).append(
            {
                "id": row["id"], "added": _iso(row["added"], tz), "product_id": row["product"],
                "category_id": row["category"], "qty": row["qty"], "price": row["price"], "total": row["total"],
                "weight": row["weight"], "name": row["name"], "category_name": row["category_name"],
                "description": row["description"], "account": row["account"],
                "type": ITEM_PRODUCT if row["type"] is None else row["type"],
                "pricing": PRICING_QTY if row["pricing"] is None else row["pricing"],
                "id_fee": row["id_fee"], "id_subscription": row["id_subscription"],
                "id_parent_item": row["id_parent_item"], "id_method": row["id_method"],
            }
        )
    payments_by_tab: dict[int, list[dict]] = {}
    for row in sorted(_named("tabs_payments", lists["payments"]), key=lambda r: r["id"]):
        payments_by_tab.setdefault(row["tab"], []).append(
            {
                "id": row["id"], "method_id": row["method"], "date": _iso(row["date"], tz), "amount": row["amount"],
                "reference": row["reference"], "account": row["account"], "type": row["type"],
            }
        )
    tabs = [
        {
            "id": row["id"], "name": row["name"], "user_id": row["user_id"], "opened": _iso(row["opened"], tz),
            "closed": _iso(row["closed"], tz), "items": items_by_tab.pop(row["id"], []),
            "payments": payments_by_tab.pop(row["id"], []),
        }
        for row in sorted(_named("tabs", lists["tabs"]), key=lambda r: r["id"])
    ]
    methods = {
        row["id"]: {"id": row["id"], "name": row["name"], "type": row["type"], "account": row["account"],
                    "id_location": row["id_location"]}
        for row in _named("methods", lists["methods"])
    }
    if "balances" in lists:
        balances = [
            {"method_id": row["id_method"], "method_name": methods.get(row["id_method"], {}).get("name"),
             "open_amount": row["open_amount"], "close_amount": row["close_amount"],
             "error_amount": row["error_amount"], "expected_close": 0}
            for row in sorted(_named("sessions_balances", lists["balances"]), key=lambda r: r["id"])
        ]
    elif session.get("open_amount") is not None:
        balances = [
            {"method_id": None, "method_name": None, "open_amount": session["open_amount"],
             "close_amount": session.get("close_amount"), "error_amount": session.get("error_amount"),
             "expected_close": 0}
        ]
    else:
        balances = []
    locations = _named("locations", lists.get("location", []))
    document = {
        "source": source, "session_id": session_id, "caisse_version": version, "layout": layout,
        "timezone": tz.key, "opened": _iso(session["opened"], tz), "closed": _iso(session["closed"], tz),
        "open_user": session.get("open_user"), "close_user": session.get("close_user"),
        "location": locations[0] if locations else None,
        "result": session.get("result"), "nb_tabs": session.get("nb_tabs"),
        "balances": balances, "tabs": tabs, "methods": methods,
        "categories": {row["id"]: row for row in _named("categories", lists["categories"])},
        "totals": {"items_total": 0, "nb_tabs": 0, "payments_by_method": {}, "weight_grams": 0},
        "checks": [],
    }
    observed = SNAPSHOT_SCHEMA.load(document)
    return _with_computed(observed, has_result="result" in session, has_nb_tabs="nb_tabs" in session)


def _with_computed(snapshot: SessionSnapshot, *, has_result: bool, has_nb_tabs: bool) -> SessionSnapshot:
    """Add the recomputed totals, each balance's expected close, and the checks against stored figures."""
    items = snapshot.items()
    by_method: dict[int, int] = {}
    for payment in snapshot.payments():
        by_method[payment.method_id] = by_method.get(payment.method_id, 0) + payment.amount
    totals = Totals(
        items_total=sum(item.total for item in items),
        nb_tabs=len(snapshot.tabs),
        payments_by_method=by_method,
        weight_grams=sum(item.qty * item.weight for item in items if item.weight is not None),
    )
    cash_methods = {m.id for m in snapshot.methods.values() if m.type == METHOD_CASH}
    balances = []
    checks = []
    if has_result:
        checks.append(Check("result", snapshot.result, totals.items_total, snapshot.result == totals.items_total))
    if has_nb_tabs:
        checks.append(Check("nb_tabs", snapshot.nb_tabs, totals.nb_tabs, snapshot.nb_tabs == totals.nb_tabs))
    for balance in snapshot.balances:
        drawer = {balance.method_id} if balance.method_id is not None else cash_methods
        expected = balance.open_amount + sum(by_method.get(method, 0) for method in drawer)
        balances.append(replace(balance, expected_close=expected))
        if balance.close_amount is not None:
            error = balance.close_amount - expected
            label = "error_amount[drawer]" if balance.method_id is None else f"error_amount[method {balance.method_id}]"
            checks.append(Check(label, balance.error_amount, error, balance.error_amount == error))
    return replace(snapshot, totals=totals, balances=balances, checks=checks)
