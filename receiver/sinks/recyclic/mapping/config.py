"""A source's ``[sources.NAME.mapping]`` table: how Paheko's names become Recyclic's ids, and what to do
with what Recyclic cannot receive.

Every key is optional; an empty mapping holds every session (each unmapped name is then a reason for the
admin). Names on the Paheko side are matched exactly as Paheko stores them. See :class:`Mapping`.
"""

from __future__ import annotations

import re
import unicodedata
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


#: Paheko's euro cash account. A cash-type method booked elsewhere (5300, 531…) holds another currency.
EURO_CASH_ACCOUNT = "530"
#: Words (accents and case ignored) by which a method's name says it is not euros: local currencies.
LOCAL_CURRENCY_WORDS = (
    "monnaie locale", "monnaie complementaire", "monnaie citoyenne", "local", "mlc", "gonette", "eusko",
    "sol violette", "stuck", "leman", "cigale", "doume", "florain", "abeille", "radis", "galleco", "sonante",
    "pive", "pesa", "tinda", "touselle", "soudicy", "bou'sol", "roue", "lou pelou", "kwa",
)


def fold(text: str) -> str:
    """Lower case without accents, for comparing names (« Électroménager » → « electromenager »)."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def local_currency_name(name: str) -> bool:
    """True when a method's name says it is a local currency (« Monnaie locale », « Gonette »…)."""
    text = " ".join(re.findall(r"[a-z0-9']+", fold(name)))
    return any(re.search(rf"(^| ){re.escape(w)}( |$)", text) for w in LOCAL_CURRENCY_WORDS)


def non_euro_cash(name: str, kind: int | None, account: str | None) -> str | None:
    """Why a Paheko method may not be euro cash, or None: its name says local currency, or it is a cash-type
    method on another account than 530. Recyclic's ``cash`` is euros: ``mapping suggest`` never drafts such a
    method as ``cash`` (its float would be added to the euros, its takings merged with them)."""
    if local_currency_name(name):
        return "its name says local currency"
    if kind == 1 and account and account.strip() != EURO_CASH_ACCOUNT:
        return (f"a cash drawer on account {account.strip()}, not {EURO_CASH_ACCOUNT} (euro cash): a local "
                "currency? If it holds euros, map it to cash yourself")
    return None


@dataclass(frozen=True)
class Place:
    """Where a Paheko location's sessions are opened in Recyclic."""

    site_id: str
    register_id: str | None = None


#: What Recyclic cannot represent at all: left out and recorded by default (``skip``).
UNREPRESENTABLE: tuple[str, ...] = ("refunds", "debt_wallet", "membership")


@dataclass(frozen=True)
class Policies:
    """``hold`` (the session waits for a person) or ``skip`` (the part is left out and recorded) per case.

    What Recyclic cannot represent (refunds, Ardoise / porte-monnaie, membership fees) is left out by
    default, with a record of its amount, weight, method and reason; the rest of the tab is forwarded.
    Configuration gaps (an unmapped location, operator, category or method) hold by default: a person
    must map the name, or decide to leave such parts out. ``mixed_methods`` (legacy profile only) holds
    too: choosing which one method represents a ticket is a person's decision."""

    refunds: Policy = "skip"  # refund lines (negative qty or total) and negative payments
    debt_wallet: Policy = "skip"  # Ardoise / Porte-monnaie payments, debt payoff and wallet top-up lines
    membership: Policy = "skip"  # lines with id_fee / id_subscription, or in a category mapped to "membership"
    unknown_category: Policy = "hold"
    unknown_method: Policy = "hold"
    unknown_location: Policy = "hold"  # skip: the whole session is left out
    unknown_operator: Policy = "hold"  # only without default_operator; skip: the whole session is left out
    mixed_methods: Policy = "hold"  # legacy profile: a ticket paid with several Recyclic codes


@dataclass(frozen=True)
class Mapping:
    """A source's mapping; the empty default maps nothing. ``profile`` is the Recyclic line, configured in the
    sink table (:func:`receiver.sinks.recyclic.config.prepare_source` copies it here; the mapping table
    still accepts it, as before). ``close_session`` defaults to True: a session left open in Recyclic
    blocks its register and operator for any live opening, and only the close carries the cash count and
    its variance. A v2 close needs the machine user's PIN and a Paheko close mapping for the site in
    Recyclic, and queues an item in Recyclic's Paheko outbox that the sink rejects at once (Paheko's caisse
    already booked the session). ``allow_live`` lets a mapping name a register or operator that ``mapping
    check`` finds in live use (not advised: an open replayed session locks that till)."""

    profile: Profile = "v2"
    close_session: bool = True
    locations: dict[str, Place] = field(default_factory=dict)
    no_location: Place | None = None
    operators: dict[str, str] = field(default_factory=dict)
    default_operator: str | None = None
    categories: dict[str, str] = field(default_factory=dict)  # Paheko name -> Recyclic uuid or MEMBERSHIP
    methods: dict[str, str] = field(default_factory=dict)  # Paheko name -> Recyclic payment code (lower case)
    policies: Policies = field(default_factory=Policies)
    allow_live: bool = False


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


def _policy(default: str = "hold") -> fields.String:
    return fields.String(load_default=default, validate=validate.OneOf(POLICIES))


class PlaceSchema(_Strict):
    site = UUIDText(required=True)
    register = UUIDText(load_default=None, allow_none=True)

    @post_load
    def make(self, data, **kwargs) -> Place:
        return Place(site_id=data["site"], register_id=data["register"])


class PoliciesSchema(_Strict):
    refunds = _policy("skip")
    debt_wallet = _policy("skip")
    membership = _policy("skip")
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
    close_session = fields.Boolean(load_default=True)
    allow_live = fields.Boolean(load_default=False)
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
        data["methods"] = {name: code.lower() for name, code in data["methods"].items()}
        return Mapping(**data)
