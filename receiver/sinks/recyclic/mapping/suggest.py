"""What a mapping must cover, read from Paheko; what is still unmapped; a pre-filled mapping to review.

:func:`read_paheko_names` reads a source's reference data through ``/api/sql``; :func:`unmapped` lists the
names a :class:`Mapping` lacks; :func:`render_suggestion` writes a ``[sources.NAME.mapping]`` TOML section,
matching names by similarity against Recyclic's reference data when given.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass

from receiver.sinks.recyclic.mapping.config import LEGACY_CODES, MEMBERSHIP, Mapping
from receiver.reread.client import PahekoClient, PahekoSQLError, sql_int
from receiver.reread.snapshot import METHOD_CASH, METHOD_DEBT, METHOD_WALLET

#: Lowest similarity (difflib ratio, case-insensitive) for a suggested match.
CUTOFF = 0.6
#: Words that mark a Recyclic register kept for deferred entry (replays should use such a register).
REPLAY_WORDS = ("différ", "differ", "paheko", "replay", "repris")


@dataclass(frozen=True)
class PahekoNames:
    """The names a mapping of this source must cover (sessions from ``first_session`` on).
    ``membership_only``: categories whose every sold line is a membership fee (no mapping needed)."""

    locations: tuple[str, ...]
    sessions_without_location: int
    operators: tuple[str, ...]
    categories: tuple[str, ...]
    membership_only: frozenset[str]
    methods: tuple[tuple[str, int | None], ...]  # (name, type)


@dataclass(frozen=True)
class RecyclicNames:
    """Recyclic's reference data: (id, name) pairs, registers with their site, payment codes."""

    categories: tuple[tuple[str, str], ...]
    sites: tuple[tuple[str, str], ...]
    registers: tuple[tuple[str, str, str | None], ...]  # (id, name, site_id)
    payment_codes: tuple[str, ...]


def read_paheko_names(client: PahekoClient, first_session: int = 1) -> PahekoNames:
    """Read locations, operators, categories (current ones and those on sold lines) and methods."""
    since = sql_int(first_session)

    def rows(sql: str) -> list[dict]:
        return client.sql(sql, complete=True).rows

    try:
        locations = tuple(r["name"] for r in rows("SELECT name FROM plugin_pos_locations ORDER BY id"))
    except PahekoSQLError as exc:  # caisse before 0.8.4 has no locations
        if "no such table" not in exc.paheko_message:
            raise
        locations = ()
    (nowhere,) = rows(f"SELECT COUNT(*) AS n FROM plugin_pos_sessions WHERE id_location IS NULL AND id >= {since}")
    operators = tuple(r["name"] for r in rows(
        "SELECT DISTINCT open_user AS name FROM plugin_pos_sessions "
        f"WHERE open_user IS NOT NULL AND id >= {since} ORDER BY open_user"))
    categories = rows(
        "SELECT name, MIN(fee) AS only_fees FROM ("
        "SELECT name, NULL AS fee FROM plugin_pos_categories UNION ALL "
        "SELECT i.category_name, (i.id_fee IS NOT NULL OR i.id_subscription IS NOT NULL) FROM plugin_pos_tabs_items i "
        f"JOIN plugin_pos_tabs t ON t.id = i.tab WHERE t.session >= {since} AND i.type = 0"
        ") GROUP BY name ORDER BY name")
    methods = rows("SELECT name, type FROM plugin_pos_methods ORDER BY id")
    return PahekoNames(
        locations=locations,
        sessions_without_location=int(nowhere["n"]),
        operators=operators,
        categories=tuple(r["name"] for r in categories),
        membership_only=frozenset(r["name"] for r in categories if r["only_fees"] == 1),
        methods=tuple(dict.fromkeys((r["name"], r["type"]) for r in methods)),
    )


def unmapped(names: PahekoNames, mapping: Mapping) -> list[str]:
    """One line per Paheko name the mapping lacks (empty: nothing would hold for want of a mapping)."""
    out = [f"location {n!r}: no Recyclic site in [locations]" for n in names.locations if n not in mapping.locations]
    if names.sessions_without_location and mapping.no_location is None:
        out.append(f"{names.sessions_without_location} session(s) without a location: no [no_location] site")
    if mapping.default_operator is None:
        out += [f"operator {n!r}: no Recyclic user in [operators] and no default_operator"
                for n in names.operators if n not in mapping.operators]
    out += [f"category {n!r}: no Recyclic category in [categories]" for n in names.categories
            if n not in mapping.categories and n not in names.membership_only]
    out += [f"payment method {n!r}: no Recyclic code in [methods]" for n, kind in names.methods
            if kind not in (METHOD_DEBT, METHOD_WALLET) and n not in mapping.methods]
    return out


def _best(name: str, choices: list[tuple[str, str]]) -> tuple[str, str, float] | None:
    """The (id, name, similarity) of the choice whose name is most like ``name``, above :data:`CUTOFF`."""
    scored = [(difflib.SequenceMatcher(None, name.casefold(), label.casefold()).ratio(), key, label)
              for key, label in choices]
    score, key, label = max(scored, default=(0.0, "", ""))
    return (key, label, score) if score >= CUTOFF else None


def _guess_code(name: str, kind: int | None, codes: tuple[str, ...]) -> str | None:
    text = name.casefold()
    if kind == METHOD_CASH or "esp" in text:
        guess = "cash"
    elif "ch" in text and "que" in text:
        guess = "check"
    elif text.startswith("cb") or "carte" in text or "card" in text:
        guess = "card"
    elif "vir" in text:
        guess = "transfer"
    else:
        match = _best(name, [(code, code) for code in codes])
        return match[0] if match else None
    return guess if guess in codes else None


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a valid TOML basic string


def render_suggestion(source: str, names: PahekoNames, current: Mapping, recyclic: RecyclicNames | None) -> str:
    """A ``[sources.SOURCE.mapping]`` section: current entries kept, others suggested by similarity (with the
    matched Recyclic name in a comment) or left commented out for a person to fill in."""
    profile = current.profile
    codes = LEGACY_CODES if profile == "legacy" else (recyclic.payment_codes if recyclic else
                                                      ("cash", "check", "card", "transfer"))
    t = f"sources.{source}.mapping"
    lines = [f"# Suggested by `paheko-recyclic mapping suggest --source {source}`: review every line.",
             "# Commented lines need an id from Recyclic; unmapped names hold their sessions.",
             f"# Recyclic line: profile = \"{profile}\" in [sources.{source}.sink].",
             f"[{t}]",
             f"close_session = {'true' if current.close_session else 'false'}"]
    if current.default_operator:
        lines.append(f'default_operator = "{current.default_operator}"')
    else:
        lines.append('# default_operator = "UUID of the Recyclic user that opens replayed sessions"')
    if not recyclic:
        lines.append("# Recyclic's categories, sites and registers were not read: ids below are to fill in.")

    lines += ["", f"[{t}.locations]"]
    for name in names.locations:
        lines.append(_location_line(name, current, recyclic))
    if names.sessions_without_location or current.no_location:
        place = current.no_location
        lines += ["", f"[{t}.no_location]  # sessions without a location"]
        lines += ([f'site = "{place.site_id}"'] + ([f'register = "{place.register_id}"'] if place.register_id else [])
                  if place else ['# site = "SITE-UUID"', '# register = "REGISTER-UUID"'])

    lines += ["", f"[{t}.operators]  # Paheko's opening user names; default_operator covers the others"]
    for name in names.operators:
        known = current.operators.get(name)
        lines.append(f"{_q(name)} = {_q(known)}" if known else f'# {_q(name)} = "USER-UUID"')

    lines += ["", f"[{t}.categories]  # a Recyclic category UUID, or \"{MEMBERSHIP}\" for membership fees"]
    for name in names.categories:
        lines.append(_category_line(name, current, names, recyclic))

    lines += ["", f"[{t}.methods]  # Recyclic payment codes: {', '.join(codes)}"]
    for name, kind in names.methods:
        if kind in (METHOD_DEBT, METHOD_WALLET):
            lines.append(f"# {_q(name)}: Ardoise / porte-monnaie, follows policies.debt_wallet (no code)")
            continue
        code = current.methods.get(name) or _guess_code(name, kind, codes)
        lines.append(f"{_q(name)} = {_q(code)}" if code else f'# {_q(name)} = "CODE"  # no code matched')

    p = current.policies
    lines += ["", f"[{t}.policies]  # \"hold\" (default): the session waits; \"skip\": left out and recorded"]
    lines += [f'{key} = "{getattr(p, key)}"' for key in p.__dataclass_fields__]
    return "\n".join(lines) + "\n"


def _location_line(name: str, current: Mapping, recyclic: RecyclicNames | None) -> str:
    place = current.locations.get(name)
    if place:
        register = f', register = "{place.register_id}"' if place.register_id else ""
        return f'{_q(name)} = {{ site = "{place.site_id}"{register} }}'
    match = None
    if recyclic:
        match = _best(name, list(recyclic.sites)) or (recyclic.sites[0] + (0.0,) if len(recyclic.sites) == 1 else None)
    if not match:
        why = "no Recyclic site matched" if recyclic else "to fill in"
        return f'# {_q(name)} = {{ site = "SITE-UUID", register = "REGISTER-UUID" }}  # {why}'
    site_id, site_name, _score = match
    registers = [(rid, rname) for rid, rname, sid in recyclic.registers if sid == site_id]
    register = _register(name, registers)
    text = f', register = "{register[0]}"' if register else ""
    note = f"  # site {_q(site_name)}" + (f", register {_q(register[1])}" if register else "")
    return f'{_q(name)} = {{ site = "{site_id}"{text} }}{note}; a register kept for replays is best'


def _register(name: str, registers: list[tuple[str, str]]) -> tuple[str, str] | None:
    """A register kept for replays, else the one named most like the location, else the only one."""
    replay = [r for r in registers if any(word in r[1].casefold() for word in REPLAY_WORDS)]
    if replay:
        return replay[0]
    match = _best(name, registers)
    if match:
        return match[:2]
    return registers[0] if len(registers) == 1 else None


def _category_line(name: str, current: Mapping, names: PahekoNames, recyclic: RecyclicNames | None) -> str:
    known = current.categories.get(name)
    if known:
        return f"{_q(name)} = {_q(known)}"
    text = name.casefold()
    if name in names.membership_only or text.startswith("adh") or "cotis" in text:
        return f'{_q(name)} = "{MEMBERSHIP}"  # membership fees: follows policies.membership'
    match = _best(name, list(recyclic.categories)) if recyclic else None
    if not match:
        return f'# {_q(name)} = "CATEGORY-UUID"  # {"no Recyclic category matched" if recyclic else "to fill in"}'
    return f"{_q(name)} = {_q(match[0])}  # {_q(match[1])} ({match[2]:.2f})"
