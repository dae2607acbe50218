"""What a mapping must cover, read from Paheko; what is still unmapped; a pre-filled mapping to review.

:func:`read_paheko_names` reads a source's reference data through ``/api/sql``; :func:`unmapped` lists the
names a :class:`Mapping` lacks; :func:`render_suggestion` writes a ``[sources.NAME.mapping]`` TOML section,
matching names by similarity against Recyclic's reference data when given.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field

from receiver.sinks.recyclic.mapping.config import (
    EURO_CASH_ACCOUNT, LEGACY_CODES, MEMBERSHIP, Mapping, fold, local_currency_name, non_euro_cash,
)
from receiver.reread.client import PahekoClient, PahekoSQLError, sql_int
from receiver.reread.snapshot import METHOD_CASH, METHOD_DEBT, METHOD_WALLET

#: Candidates shown for a name without an exact match, and the lowest score worth showing.
CANDIDATES = 3
SHOW_FROM = 0.4
#: Two candidates closer than this are a near tie: the comment says so.
NEAR_TIE = 0.05
#: Words (folded) that mark a Recyclic register or user kept for deferred entry (replays use such ones).
REPLAY_WORDS = ("differ", "paheko", "replay", "repris", "saisie")


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
    accounts: dict[str, str | None] = field(default_factory=dict)  # method name -> Paheko account


@dataclass(frozen=True)
class RecyclicNames:
    """Recyclic's reference data: (id, name) pairs, registers with their site, payment codes.
    ``parents``: category id -> parent id; ``deferred``: ids of registers with deferred entry enabled;
    ``labels``: payment code -> label; ``users``: (id, username, role) of users;
    ``machine_user``: the username the receiver reads Recyclic with."""

    categories: tuple[tuple[str, str], ...]
    sites: tuple[tuple[str, str], ...]
    registers: tuple[tuple[str, str, str | None], ...]  # (id, name, site_id)
    payment_codes: tuple[str, ...]
    parents: dict[str, str | None] = field(default_factory=dict)
    deferred: frozenset[str] = frozenset()
    labels: dict[str, str] = field(default_factory=dict)
    users: tuple[tuple[str, str, str], ...] = ()
    machine_user: str | None = None


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
    methods = rows("SELECT name, type, account FROM plugin_pos_methods ORDER BY id")
    return PahekoNames(
        locations=locations,
        sessions_without_location=int(nowhere["n"]),
        operators=operators,
        categories=tuple(r["name"] for r in categories),
        membership_only=frozenset(r["name"] for r in categories if r["only_fees"] == 1),
        methods=tuple(dict.fromkeys((r["name"], r["type"]) for r in methods)),
        accounts={r["name"]: (str(r["account"]) if r["account"] is not None else None) for r in methods},
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


# --- matching names -----------------------------------------------------------------------------------


def normalise(name: str) -> str:
    """A name as compared: no accents, case or punctuation, words in order, plurals singular
    (« Vêtements / Chaussures » → « vetement chaussure », « Jeux » → « jeu »)."""
    words = re.findall(r"[a-z0-9]+", fold(name))
    return " ".join(w[:-1] if len(w) > 3 and w[-1] in "sx" and not w.endswith("ss") else w for w in words)


@dataclass(frozen=True)
class Candidate:
    id: str
    name: str
    score: float
    path: str  # "Parent › Name" when it has a parent
    leaf: bool


#: Score of a candidate holding every word of the name among others (« Puériculture » in « Puériculture
#: (poussettes, …) »): high, never an exact match.
CONTAINED = 0.9


def score(a: str, b: str) -> float:
    """Similarity of name ``a`` to candidate ``b`` once normalised: 1.0 only for the same normalised name;
    otherwise the best of difflib's ratio and the share of ``a``'s words found in ``b`` (× 0.9)."""
    na, nb = normalise(a), normalise(b)
    if na == nb:
        return 1.0
    words_a, words_b = na.split(), set(nb.split())
    contained = CONTAINED * sum(w in words_b for w in words_a) / len(words_a) if words_a else 0.0
    return min(max(difflib.SequenceMatcher(None, na, nb).ratio(), contained), 0.99)


def _candidates(name: str, recyclic: RecyclicNames) -> list[Candidate]:
    """Recyclic's categories by similarity to ``name``, best first; leaves before parents at equal score."""
    by_id = dict(recyclic.categories)
    parents = set(recyclic.parents.values())
    out = []
    for key, label in recyclic.categories:
        parent = recyclic.parents.get(key)
        path = f"{by_id[parent]} › {label}" if parent in by_id else label
        out.append(Candidate(key, label, score(name, label), path, key not in parents))
    out.sort(key=lambda c: (-round(c.score, 6), not c.leaf, c.path))
    return out


def _children(key: str, recyclic: RecyclicNames) -> list[str]:
    by_id = dict(recyclic.categories)
    return [by_id[c] for c, p in recyclic.parents.items() if p == key and c in by_id]


def _candidate_lines(name: str, candidates: list[Candidate], what: str, placeholder: str) -> list[str]:
    shown = [c for c in candidates if c.score >= SHOW_FROM][:CANDIDATES]
    if not shown:
        return [f"# {_q(name)}: no Recyclic {what} resembles it.", f'# {_q(name)} = "{placeholder}"']
    tie = len(shown) > 1 and shown[0].score - shown[1].score < NEAR_TIE
    lines = [f"# {_q(name)}: no exact match in Recyclic; closest{' (NEAR TIE: check them all)' if tie else ''}:"]
    lines += [f"#   {c.score:.2f} {_q(c.path)}{'' if c.leaf else ' (parent)'} = {_q(c.id)}" for c in shown]
    lines.append(f'# {_q(name)} = "{placeholder}"')
    return lines


# --- payment methods --------------------------------------------------------------------------------------

#: Words of a Paheko method name (folded) → Recyclic's seeded code, used only when that code exists.
KEYWORDS = (("cheque", "check"), ("carte", "card"), ("cb", "card"), ("card", "card"), ("virement", "transfer"),
            ("transfer", "transfer"))


def _method_lines(name: str, kind: int | None, account: str | None, codes: tuple[str, ...],
                  recyclic: RecyclicNames | None) -> list[str]:
    if kind in (METHOD_DEBT, METHOD_WALLET):
        return [f"# {_q(name)}: Ardoise / porte-monnaie, follows policies.debt_wallet (no code)"]
    labels = recyclic.labels if recyclic else {}
    not_euros = non_euro_cash(name, kind, account)
    # The same name (code or label) in Recyclic is an exact match, whatever the method.
    exact = [c for c in codes if normalise(c) == normalise(name) or normalise(labels.get(c, "")) == normalise(name)]
    if not_euros:
        matching = exact or ([c for c in codes if c != "cash" and (
            local_currency_name(c) or local_currency_name(labels.get(c, "")))] if local_currency_name(name) else [])
        if len(matching) == 1:
            return [f"{_q(name)} = {_q(matching[0])}  # not euro cash ({not_euros}): Recyclic's "
                    f"{_q(labels.get(matching[0], matching[0]))}"]
        return [f"# {_q(name)}: not euro cash: {not_euros}.",
                "#   Never cash: its float would add to the euros and its takings merge with them.",
                "#   Recyclic has " + ("several candidate methods: " + ", ".join(matching) if matching else
                                     "no payment method for it: a super-admin creates one in Recyclic"
                                     " (accounting, payment methods)") + "; then map it here.",
                "#   Left unmapped, its tickets hold (policies.unknown_method = \"skip\" leaves them out, recorded).",
                f'# {_q(name)} = "CODE"']
    if len(exact) == 1:
        return [f"{_q(name)} = {_q(exact[0])}  # same name in Recyclic"]
    if kind == METHOD_CASH and "cash" in codes:
        return [f'{_q(name)} = "cash"  # euro cash (account {account or EURO_CASH_ACCOUNT})']
    words = set(normalise(name).split())
    guesses = list(dict.fromkeys(code for word, code in KEYWORDS if word in words and code in codes))
    if len(guesses) == 1:
        return [f"{_q(name)} = {_q(guesses[0])}  # by its name"]
    return [f"# {_q(name)}: no Recyclic payment code matches its name; codes: {', '.join(codes)}",
            f'# {_q(name)} = "CODE"']


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a valid TOML basic string


# --- the draft -------------------------------------------------------------------------------------------


def render_suggestion(source: str, names: PahekoNames, current: Mapping, recyclic: RecyclicNames | None) -> str:
    """A ``[sources.SOURCE.mapping]`` section: current entries kept; exact (normalised) matches as active
    lines; anything else commented with Recyclic's closest candidates and scores, for a person to choose."""
    profile = current.profile
    codes = LEGACY_CODES if profile == "legacy" else (recyclic.payment_codes if recyclic else
                                                      ("cash", "check", "card", "transfer"))
    t = f"sources.{source}.mapping"
    lines = [f"# Suggested by `paheko-recyclic mapping suggest --source {source}`: review every line.",
             "# Active lines are exact matches (accents, case, punctuation and plurals aside). Commented lines",
             "# show Recyclic's closest candidates with a score: copy the id you choose. An unmapped name holds",
             "# the sessions that use it (nothing is guessed). Then run `mapping check --source "
             f"{source} --dry-run`.",
             f"# Recyclic line: profile = \"{profile}\" in [sources.{source}.sink].",
             f"[{t}]"]
    if current.close_session:
        lines.append("close_session = true  # each session is closed in Recyclic after its sales (count, variance):"
                     " needs pin in [sink]" + (" and a Paheko close mapping for the site in Recyclic" if profile == "v2" else ""))
    else:
        lines.append("close_session = false  # sessions stay OPEN in Recyclic: their register and operator are"
                     " locked for any live opening, and the cash count never reaches Recyclic")
    lines += _operator_lines(current, recyclic)
    if current.allow_live:
        lines.append("allow_live = true  # a register or operator in live use is accepted (not advised)")
    if not recyclic:
        lines.append("# Recyclic's categories, sites and registers were not read: ids below are to fill in.")

    lines += ["", f"[{t}.locations]  # a register kept for deferred entry, never the shop's live till"]
    for name in names.locations:
        lines += _location_lines(name, current, recyclic)
    if names.sessions_without_location or current.no_location:
        place = current.no_location
        lines += ["", f"[{t}.no_location]  # sessions without a location"]
        if place:
            lines += [f'site = "{place.site_id}"'] + ([f'register = "{place.register_id}"'] if place.register_id else [])
        else:
            lines += _place_lines(None, recyclic, inline=False)

    lines += ["", f"[{t}.operators]  # Paheko's opening user names; default_operator covers the others.",
              "# Map a name only to a Recyclic user kept for deferred entry: a replayed session left open",
              "# under a real cashier's account blocks their live openings."]
    for name in names.operators:
        known = current.operators.get(name)
        lines.append(f"{_q(name)} = {_q(known)}" if known else f'# {_q(name)} = "USER-UUID"')

    lines += ["", f"[{t}.categories]  # a Recyclic category UUID, or \"{MEMBERSHIP}\" for membership fees"]
    for name in names.categories:
        lines += _category_lines(name, current, names, recyclic)

    lines += ["", f"[{t}.methods]  # Recyclic payment codes: {', '.join(codes)}"]
    for name, kind in names.methods:
        known = current.methods.get(name)
        if known:
            lines.append(f"{_q(name)} = {_q(known)}")
        else:
            lines += _method_lines(name, kind, names.accounts.get(name), codes, recyclic)

    p = current.policies
    lines += ["", f"[{t}.policies]  # \"skip\": left out and recorded (amount, weight, method, reason);"
              " \"hold\": the session waits for a person"]
    notes = {"refunds": "Recyclic cannot receive a refund; the rest of the ticket is forwarded",
             "debt_wallet": "Ardoise / porte-monnaie have no Recyclic equivalent",
             "membership": "a membership fee is not a Recyclic sale",
             "unknown_category": "an unmapped category: map it (or skip its lines)",
             "unknown_method": "an unmapped payment method: map it (or skip its payments)",
             "unknown_location": "skip leaves the whole session out",
             "unknown_operator": "only without default_operator",
             "mixed_methods": "legacy profile: Recyclic 1.3 takes one method per sale"}
    lines += [f'{key} = "{getattr(p, key)}"  # {notes[key]}' for key in p.__dataclass_fields__]
    return "\n".join(lines) + "\n"


def _dedicated(recyclic: RecyclicNames) -> list[tuple[str, str, str]]:
    """Users whose name says they are kept for deferred entry (never a cashier's own account)."""
    return [u for u in recyclic.users if any(w in fold(u[1]) for w in REPLAY_WORDS)
            and u[1] != recyclic.machine_user]


def _operator_lines(current: Mapping, recyclic: RecyclicNames | None) -> list[str]:
    if current.default_operator:
        return [f'default_operator = "{current.default_operator}"']
    how = ["# default_operator: a Recyclic user kept for deferred entry, never a real cashier. To create one:",
           "#   Recyclic › Administration › Utilisateurs › new user « saisie-paheko », role user, no one logs in",
           "#   with it; then put its id here."]
    if not recyclic:
        return how + ['# default_operator = "USER-UUID"']
    dedicated = _dedicated(recyclic)
    if len(dedicated) == 1:
        user_id, username, _role = dedicated[0]
        return [f'default_operator = "{user_id}"  # Recyclic user {_q(username)}, kept for deferred entry']
    machine = [u for u in recyclic.users if u[1] == recyclic.machine_user]
    if not dedicated and machine:
        return [f'default_operator = "{machine[0][0]}"  # the receiver\'s own Recyclic user '
                f'{_q(machine[0][1])}: no cashier uses it'] + how[:1]
    if dedicated:
        how = [f"# Several Recyclic users look kept for deferred entry: {', '.join(u[1] for u in dedicated)}."]
    return how + ['# default_operator = "USER-UUID"']


def _location_lines(name: str, current: Mapping, recyclic: RecyclicNames | None) -> list[str]:
    place = current.locations.get(name)
    if place:
        register = f', register = "{place.register_id}"' if place.register_id else ""
        return [f'{_q(name)} = {{ site = "{place.site_id}"{register} }}']
    return _place_lines(name, recyclic, inline=True)


def _place_lines(name: str | None, recyclic: RecyclicNames | None, *, inline: bool) -> list[str]:
    """Site and register for a Paheko location (``name``) or for sessions without one (``name`` None)."""
    def out(site: str, register: str | None, note: str, active: bool) -> list[str]:
        mark = "" if active else "# "
        if inline:
            reg = f', register = "{register}"' if register else ""
            return [f'{mark}{_q(name)} = {{ site = "{site}"{reg} }}  # {note}']
        return [f'{mark}site = "{site}"  # {note}'] + ([f'{mark}register = "{register}"'] if register else [])

    if not recyclic:
        return out("SITE-UUID", "REGISTER-UUID", "to fill in", False)
    sites = list(recyclic.sites)
    site = None
    if len(sites) == 1:
        site, why = sites[0], "the only Recyclic site"
    elif name is not None:
        exact = [s for s in sites if normalise(s[1]) == normalise(name)]
        if len(exact) == 1:
            site, why = exact[0], "same name"
    if site is None:
        lines = [f"# {_q(name or 'no location')}: several Recyclic sites; choose one: "
                 + ", ".join(f"{_q(label)} = {_q(key)}" for key, label in sites)]
        return lines + out("SITE-UUID", None, "to choose", False)
    registers = [(rid, rname) for rid, rname, sid in recyclic.registers if sid == site[0]]
    deferred = [r for r in registers if r[0] in recyclic.deferred]
    named = [r for r in registers if any(w in fold(r[1]) for w in REPLAY_WORDS)]
    kept = [r for r in deferred if r in named] or deferred or named
    note = f"site {_q(site[1])} ({why})"
    if len(kept) == 1:
        register = kept[0]
        return out(site[0], register[0], f"{note}, register {_q(register[1])} kept for deferred entry", True)
    lines = ["# No register of this site is kept for deferred entry" if not kept else
             "# Several registers look kept for deferred entry: " + ", ".join(f"{_q(r[1])} = {_q(r[0])}" for r in kept),
             "#   Sessions open without a register until you add one. Never the shop's live register: a replayed",
             "#   session open on it blocks the till. To create one: Recyclic › Administration › Postes de caisse",
             "#   › new « Saisie différée Paheko » with deferred entry (« caisses différées ») enabled."]
    return lines + out(site[0], None, note, True)


def _category_lines(name: str, current: Mapping, names: PahekoNames, recyclic: RecyclicNames | None) -> list[str]:
    known = current.categories.get(name)
    if known:
        return [f"{_q(name)} = {_q(known)}"]
    text = fold(name)
    if name in names.membership_only or text.startswith("adh") or "cotis" in text:
        return [f'{_q(name)} = "{MEMBERSHIP}"  # membership fees: follows policies.membership']
    if not recyclic:
        return [f'# {_q(name)} = "CATEGORY-UUID"  # to fill in']
    candidates = _candidates(name, recyclic)
    exact = [c for c in candidates if normalise(c.name) == normalise(name)]
    if len(exact) > 1:  # the same name in several places of the tree: prefer the only leaf, if one
        leaves = [c for c in exact if c.leaf]
        exact = leaves if len(leaves) == 1 else exact
    if len(exact) == 1:
        match = exact[0]
        note = "exact" if match.name == name else f"same name as {_q(match.name)}"
        line = f"{_q(name)} = {_q(match.id)}  # {note}: {_q(match.path)}"
        if not match.leaf:
            line += " (a parent; its sub-categories: " + ", ".join(_children(match.id, recyclic)) + ")"
        return [line]
    if len(exact) > 1:
        return ([f"# {_q(name)}: the same name in several places of Recyclic's tree; choose one:"]
                + [f"#   {_q(c.path)} = {_q(c.id)}" for c in exact] + [f'# {_q(name)} = "CATEGORY-UUID"'])
    return _candidate_lines(name, candidates, "category", "CATEGORY-UUID")
