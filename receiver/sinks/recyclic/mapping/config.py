"""A source's ``[sources.NAME.mapping]`` table: how Paheko's names become Recyclic's ids, and what to do
with what Recyclic cannot receive.

Every key is optional; an empty mapping holds every session (each unmapped name is then a reason for the
admin). Names on the Paheko side are matched exactly as Paheko stores them. See :class:`Mapping`.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Literal

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate, validates_schema

Profile = Literal["legacy", "v2"]
Policy = Literal["hold", "skip"]
PROFILES: tuple[str, ...] = ("legacy", "v2")
POLICIES: tuple[str, ...] = ("hold", "skip")
#: The category value that marks a Paheko category as membership fees (not a Recyclic category).
MEMBERSHIP = "membership"
#: Recyclic 1.3 knows only these payment codes, one per sale.
LEGACY_CODES: tuple[str, ...] = ("cash", "card", "check")
CODE = re.compile(r"^[A-Za-z0-9_-]{1,50}$")


@dataclass(frozen=True)
class Place:
    """Where a Paheko location's sessions are opened in Recyclic."""

    site_id: str
    register_id: str | None = None


@dataclass(frozen=True)
class Policies:
    """``hold`` (the session waits for a person) or ``skip`` (the part is left out and recorded) per case."""

    refunds: Policy = "hold"  # refund lines (negative qty or total) and negative payments
    debt_wallet: Policy = "hold"  # Ardoise / Porte-monnaie payments, debt payoff and wallet top-up lines
    membership: Policy = "hold"  # lines with id_fee / id_subscription, or in a category mapped to "membership"
    unknown_category: Policy = "hold"
    unknown_method: Policy = "hold"
    unknown_location: Policy = "hold"  # skip: the whole session is left out
    unknown_operator: Policy = "hold"  # only without default_operator; skip: the whole session is left out
    mixed_methods: Policy = "hold"  # legacy profile: a ticket paid with several Recyclic codes


@dataclass(frozen=True)
class Mapping:
    """A source's mapping; the empty default maps nothing. ``profile`` is the Recyclic line, configured in the
    sink table (:func:`receiver.sinks.recyclic.config.prepare_source` copies it here; the mapping table
    still accepts it, as before). ``close_session`` defaults to True for the legacy
    profile (Recyclic 1.3 refuses a second open session per operator or register) and False for v2 (a v2
    close needs a PIN and a Paheko close mapping, and queues an accounting entry Paheko already booked)."""

    profile: Profile = "v2"
    close_session: bool = False
    locations: dict[str, Place] = field(default_factory=dict)
    no_location: Place | None = None
    operators: dict[str, str] = field(default_factory=dict)
    default_operator: str | None = None
    categories: dict[str, str] = field(default_factory=dict)  # Paheko name -> Recyclic uuid or MEMBERSHIP
    methods: dict[str, str] = field(default_factory=dict)  # Paheko name -> Recyclic payment code (lower case)
    policies: Policies = field(default_factory=Policies)


def _uuid_text(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise ValidationError(f"{value!r} is not a UUID (copy the id from Recyclic)") from None


class UUIDText(fields.String):
    """A UUID as canonical lower-case text."""

    def _deserialize(self, value, attr, data, **kwargs) -> str:
        return _uuid_text(super()._deserialize(value, attr, data, **kwargs))


class CategoryTarget(fields.String):
    """A Recyclic category UUID, or ``"membership"``."""

    def _deserialize(self, value, attr, data, **kwargs) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        return MEMBERSHIP if text == MEMBERSHIP else _uuid_text(text)


class _Strict(Schema):
    class Meta:
        unknown = RAISE


def _name() -> fields.String:
    return fields.String(validate=validate.Length(min=1))


def _policy() -> fields.String:
    return fields.String(load_default="hold", validate=validate.OneOf(POLICIES))


class PlaceSchema(_Strict):
    site = UUIDText(required=True)
    register = UUIDText(load_default=None, allow_none=True)

    @post_load
    def make(self, data, **kwargs) -> Place:
        return Place(site_id=data["site"], register_id=data["register"])


class PoliciesSchema(_Strict):
    refunds = _policy()
    debt_wallet = _policy()
    membership = _policy()
    unknown_category = _policy()
    unknown_method = _policy()
    unknown_location = _policy()
    unknown_operator = _policy()
    mixed_methods = _policy()

    @post_load
    def make(self, data, **kwargs) -> Policies:
        return Policies(**data)


class MappingSchema(_Strict):
    profile = fields.String(load_default="v2", validate=validate.OneOf(PROFILES))
    close_session = fields.Boolean(load_default=None)
    locations = fields.Dict(keys=_name(), values=fields.Nested(PlaceSchema), load_default=dict)
    no_location = fields.Nested(PlaceSchema, load_default=None)
    operators = fields.Dict(keys=_name(), values=UUIDText(), load_default=dict)
    default_operator = UUIDText(load_default=None)
    categories = fields.Dict(keys=_name(), values=CategoryTarget(), load_default=dict)
    methods = fields.Dict(
        keys=_name(),
        values=fields.String(validate=validate.Regexp(CODE, error="payment codes use letters, digits, - and _")),
        load_default=dict,
    )
    policies = fields.Nested(PoliciesSchema, load_default=Policies)

    @validates_schema
    def legacy_codes(self, data, **kwargs):
        if data.get("profile") != "legacy":
            return
        wrong = sorted(name for name, code in data.get("methods", {}).items() if code.lower() not in LEGACY_CODES)
        if wrong:
            raise ValidationError(
                f"the legacy profile (Recyclic 1.3) accepts only {', '.join(LEGACY_CODES)}; "
                f"change the code of {', '.join(repr(n) for n in wrong)}",
                "methods",
            )

    @post_load
    def make(self, data, **kwargs) -> Mapping:
        if data["close_session"] is None:
            data["close_session"] = data["profile"] == "legacy"
        data["methods"] = {name: code.lower() for name, code in data["methods"].items()}
        return Mapping(**data)
