"""Request bodies of the Recyclic stand-in, twice: as the real server accepts them, and as published.

``lenient(route, profile)`` mimics the real server's loose validation (unknown fields ignored, numeric
strings coerced, quantity 0 accepted); its failures become FastAPI-style 422 lists ``[{type, loc, msg}]``.
``contract(route, profile)`` is the published contract (no extra field, exact JSON types); it never
refuses a request, it only feeds ``app.contract_violations`` so tests can check what the forwarder sends.
"""

from __future__ import annotations

import re
from datetime import UTC
from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate, validates_schema

from receiver.dev.recyclic_store import LEGACY_PAYMENT_METHODS, Profile

_UUID_TEXT = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_ISO_WITH_OFFSET = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$")


# -- lenient: what the running server accepts ----------------------------------------------------


class _Whole(fields.Integer):
    """Like pydantic's lax int: ``3``, ``3.0`` and ``"3"`` pass, ``3.5`` and booleans do not."""

    def _validated(self, value):
        if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
            raise self.make_error("invalid")
        return super()._validated(value)


class _Lenient(Schema):
    class Meta:
        unknown = EXCLUDE


#: pydantic's message for a float field given null or a non-number (observed: weight null → ``float_type``)
FLOAT_TYPE_MSG = "Input should be a valid number"


def _money(**kwargs) -> fields.Float:
    return fields.Float(allow_nan=False, error_messages={"null": FLOAT_TYPE_MSG, "invalid": FLOAT_TYPE_MSG},
                        **kwargs)


class LoginBody(_Lenient):
    username = fields.String(required=True)
    password = fields.String(required=True)


class RefreshBody(_Lenient):
    refresh_token = fields.String(required=True)


class PinBody(_Lenient):
    pin = fields.String(required=True, validate=validate.Regexp(r"^\d{4}$", error="PIN must be 4 digits"))


class OpenSessionBody(_Lenient):
    operator_id = fields.UUID(required=True)
    site_id = fields.UUID(required=True)
    register_id = fields.UUID(load_default=None, allow_none=True)
    initial_amount = _money(required=True, validate=validate.Range(0, 10000))
    opened_at = fields.AwareDateTime(load_default=None, allow_none=True, default_timezone=UTC)


class CloseSessionBody(_Lenient):
    actual_amount = _money(required=True, validate=validate.Range(min=0))
    variance_comment = fields.String(load_default=None, allow_none=True)


class ItemBody(_Lenient):
    category = fields.String(required=True)
    quantity = _Whole(required=True)
    weight = _money(required=True)
    unit_price = _money(required=True)
    total_price = _money(required=True)
    notes = fields.String(load_default=None, allow_none=True)


class PaymentBody(_Lenient):
    payment_method = fields.String(required=True)
    amount = _money(required=True, validate=validate.Range(min=0, min_inclusive=False))


class LegacySaleBody(_Lenient):
    cash_session_id = fields.UUID(required=True)
    items = fields.List(fields.Nested(ItemBody), required=True)
    total_amount = _money(required=True)
    donation = _money(load_default=0, allow_none=True)
    payment_method = fields.String(required=True, validate=validate.OneOf(LEGACY_PAYMENT_METHODS))


class SaleBody(_Lenient):
    cash_session_id = fields.UUID(required=True)
    items = fields.List(fields.Nested(ItemBody), required=True)
    total_amount = _money(required=True)
    donation = _money(load_default=0, allow_none=True)
    payments = fields.List(fields.Nested(PaymentBody), load_default=None, allow_none=True)
    payment_method = fields.String(load_default=None, allow_none=True)
    note = fields.String(load_default=None, allow_none=True)


class OutboxRejectBody(_Lenient):
    reason = fields.String(required=True, validate=validate.Length(max=4000))

    @validates_schema
    def _not_blank(self, data, **kwargs):
        if not (data.get("reason") or "").strip():  # observed: a blank reason → 422
            raise ValidationError({"reason": ["reason ne peut pas être vide"]})


class SessionListQuery(_Lenient):
    """``GET /cash-sessions/`` query (read in v2's code; unknown parameters such as ``register_id`` ignored)."""

    skip = fields.Integer(load_default=0, validate=validate.Range(min=0))
    limit = fields.Integer(load_default=20, validate=validate.Range(1, 100))
    status = fields.String(load_default=None, validate=validate.OneOf(("open", "closed")))
    operator_id = fields.UUID(load_default=None)
    site_id = fields.UUID(load_default=None)
    date_from = fields.AwareDateTime(load_default=None, default_timezone=UTC)
    date_to = fields.AwareDateTime(load_default=None, default_timezone=UTC)
    search = fields.String(load_default=None)
    include_empty = fields.Boolean(load_default=False)


class OutboxListQuery(_Lenient):
    skip = fields.Integer(load_default=0, validate=validate.Range(min=0))
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 200))
    cash_session_id = fields.UUID(load_default=None)
    outbox_status = fields.String(load_default=None)
    operation_type = fields.String(load_default=None)


_LENIENT: dict[str, type[Schema]] = {
    "login": LoginBody, "refresh": RefreshBody, "pin": PinBody, "open": OpenSessionBody,
    "close": CloseSessionBody, "sale": SaleBody, "legacy-sale": LegacySaleBody, "outbox-reject": OutboxRejectBody,
    "session-list": SessionListQuery, "outbox-list": OutboxListQuery,
}

_PYDANTIC_TYPES = {
    "Missing data for required field.": "missing",
    "Field may not be null.": "none_forbidden",
    FLOAT_TYPE_MSG: "float_type",
    "Not a valid number.": "float_parsing",
    "Not a valid integer.": "int_parsing",
    "Not a valid string.": "string_type",
    "Not a valid UUID.": "uuid_parsing",
    "Not a valid list.": "list_type",
    "Invalid input type.": "model_type",
}


def validation_errors(messages: Any, loc: tuple = ("body",)) -> list[dict[str, Any]]:
    """marshmallow's nested messages as FastAPI's ``[{type, loc, msg}]``."""
    if isinstance(messages, dict):
        return [error for key, sub in messages.items() for error in validation_errors(sub, (*loc, key))]
    return [{"type": (kind := _PYDANTIC_TYPES.get(msg, "value_error")), "loc": list(loc),
             "msg": "Field required" if kind == "missing" else msg, "url": f"https://errors.pydantic.dev/2.11/v/{kind}"}
            for msg in (messages if isinstance(messages, list) else [messages])]


def query_values(route: str, args: Any) -> dict[str, Any]:
    """A query string (``request.args``) read like FastAPI reads ``Query(...)``; raises :class:`ValidationError`."""
    return _LENIENT[route]().load(args.to_dict(flat=True) if hasattr(args, "to_dict") else dict(args))


def load_lenient(route: str, profile: Profile, body: Any) -> dict[str, Any]:
    """The body as the real server reads it; raises :class:`ValidationError` (→ 422)."""
    name = "legacy-sale" if route == "sale" and profile == "legacy" else route
    if not isinstance(body, dict):
        raise ValidationError({"_schema": ["Invalid input type."]})
    return _LENIENT[name]().load(body)


# -- strict: the published contract --------------------------------------------------------------


class _Number(fields.Field):
    """A JSON number (int or float), never a string or a boolean."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationError("must be a JSON number")
        return value


def _uuid(**kwargs) -> fields.String:
    return fields.String(validate=validate.Regexp(_UUID_TEXT, error="must be a UUID string"), **kwargs)


class _Strict(Schema):
    class Meta:
        unknown = RAISE


def _strict_schema(name: str, spec: dict[str, fields.Field]) -> type[Schema]:
    return _Strict.from_dict(spec, name=name)


def _contracts() -> dict[str, type[Schema]]:
    text = fields.String
    item = _strict_schema("ItemContract", {
        "category": text(required=True, validate=validate.Length(min=1, max=50)),
        "quantity": fields.Integer(required=True, strict=True), "weight": _Number(required=True),
        "unit_price": _Number(required=True), "total_price": _Number(required=True),
        "notes": text(allow_none=True),
    })
    payment = _strict_schema("PaymentContract", {
        "payment_method": text(required=True), "amount": _Number(required=True)})
    session_fields = {"operator_id": _uuid(required=True), "site_id": _uuid(required=True),
                      "register_id": _uuid(allow_none=True), "initial_amount": _Number(required=True)}
    sale_fields = {"cash_session_id": _uuid(required=True), "items": fields.List(fields.Nested(item), required=True),
                   "total_amount": _Number(required=True), "donation": _Number()}
    iso = text(validate=validate.Regexp(_ISO_WITH_OFFSET, error="must be an ISO 8601 datetime with its offset"))
    return {
        "login": _strict_schema("LoginContract", {"username": text(required=True), "password": text(required=True)}),
        "refresh": _strict_schema("RefreshContract", {"refresh_token": text(required=True)}),
        "outbox-reject": _strict_schema("OutboxRejectContract", {"reason": text(required=True)}),
        "pin": _strict_schema("PinContract", {"pin": text(required=True)}),
        "legacy-open": _strict_schema("LegacyOpenContract", dict(session_fields)),
        "open": _strict_schema("OpenContract", {**session_fields, "opened_at": iso}),
        "close": _strict_schema("CloseContract", {"actual_amount": _Number(required=True),
                                                  "variance_comment": text(allow_none=True)}),
        "legacy-sale": _strict_schema("LegacySaleContract", {
            **sale_fields, "payment_method": text(required=True, validate=validate.OneOf(LEGACY_PAYMENT_METHODS))}),
        "sale": _strict_schema("SaleContract", {
            **sale_fields, "payments": fields.List(fields.Nested(payment), required=True),
            "note": text(allow_none=True)}),
    }


_CONTRACTS = _contracts()


def contract_errors(route: str, profile: Profile, body: Any) -> dict[str, Any] | None:
    """Why ``body`` breaks the published contract of ``route``, or None when it conforms."""
    name = f"legacy-{route}" if profile == "legacy" and f"legacy-{route}" in _CONTRACTS else route
    if not isinstance(body, dict):
        return {"_schema": ["body must be a JSON object"]}
    try:
        _CONTRACTS[name]().load(body)
    except ValidationError as error:
        return error.normalized_messages()
    return None
