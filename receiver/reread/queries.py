"""The SQL sent to Paheko's ``/api/sql`` to re-read one session, built from validated ints and fixed text only.

Facts that shape it (paheko.md §1): no bound parameters; no PRAGMA; ``sqlite_master`` refused up to 1.3.21;
in a result row a duplicate column name *overwrites* an earlier NULL one (PHP ``isset``), so a query must
never select two columns with the same name. Hence two steps:

1. :func:`probe_sql` — one row: the caisse version, the highest session id, whether the optional tables exist
   (a missing one makes Paheko answer ``no such table: X``; the caller drops it and probes again), and
   ``s.*`` of the session, whose keys are the live columns of ``plugin_pos_sessions``.
2. :func:`body_sql` — one row whose columns are JSON arrays (``json_group_array(json_array(...))``) of the
   session's lists, each a keyset page on ``id``, plus, on the first page, the row count of each list.
   Every table has its own alias (:data:`ALIASES`), so ``no such column: item.id_method`` names the table
   whose optional column is missing: the caller drops it (:func:`missing_column`) and asks again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from receiver.reread.client import sql_int

P = "plugin_pos_"
MARKER = "#"

OPTIONAL_TABLES = ("sessions_balances", "locations")
ALIASES = {
    "tabs": "tab", "tabs_items": "item", "tabs_payments": "pay", "sessions_balances": "bal", "methods": "meth",
    "categories": "cat", "locations": "loc", "products": "prod", "sessions": "s",
}
# Columns read per table, in this order (the first is always ``id``, the keyset). A column absent from the
# live schema reads as NULL; only the OPTIONAL ones may be absent.
TEXT_COLUMNS = frozenset(
    {"name", "opened", "closed", "added", "date", "category_name", "description", "account", "reference"}
)
LIST_COLUMNS: dict[str, tuple[str, ...]] = {
    "locations": ("id", "name"),
    "sessions_balances": ("id", "id_method", "open_amount", "close_amount", "error_amount"),
    "tabs": ("id", "name", "user_id", "opened", "closed"),
    "tabs_items": (
        "id", "tab", "added", "product", "qty", "price", "total", "weight", "name", "category_name",
        "description", "account", "type", "pricing", "id_fee", "id_subscription", "id_parent_item", "id_method",
    ),
    "tabs_payments": ("id", "tab", "method", "date", "amount", "reference", "account", "type"),
    "methods": ("id", "name", "type", "account", "id_location"),
    "categories": ("id", "name", "account"),
}
OPTIONAL_COLUMNS: dict[str, frozenset[str]] = {
    "tabs": frozenset({"user_id"}),
    "tabs_items": frozenset(
        {"weight", "description", "account", "type", "pricing", "id_fee", "id_subscription", "id_parent_item",
         "id_method"}
    ),
    "tabs_payments": frozenset({"reference", "account", "type"}),
    "methods": frozenset({"type", "account", "id_location"}),
    "categories": frozenset({"account"}),
    "sessions_balances": frozenset(),
    "locations": frozenset(),
}
# Documented differences before caisse 0.8.12 (guessed up front to save a round trip; errors still rule).
LEGACY_ABSENT = {"tabs_items": {"id_method"}, "tabs_payments": {"type"}}

_NO_SUCH_TABLE = re.compile(r"no such table: (?:main\.)?(\w+)")
_NO_SUCH_COLUMN = re.compile(r"no such column: (\w+)\.(\w+)")


def missing_table(paheko_message: str) -> str | None:
    """The caisse table name (without prefix) in a ``no such table`` error, else None."""
    match = _NO_SUCH_TABLE.search(paheko_message)
    if match and match.group(1).startswith(P):
        return match.group(1)[len(P):]
    return None


def missing_column(paheko_message: str) -> tuple[str, str] | None:
    """``(table, column)`` from a ``no such column: alias.column`` error, else None."""
    match = _NO_SUCH_COLUMN.search(paheko_message)
    tables = {alias: table for table, alias in ALIASES.items()}
    if match and match.group(1) in tables:
        return tables[match.group(1)], match.group(2)
    return None


def probe_sql(session_id: int, tables: tuple[str, ...]) -> str:
    """Version, highest session id, a count per optional table in ``tables``, and the session row ``s.*``."""
    sid = sql_int(session_id)
    select = [
        f"(SELECT version FROM plugins WHERE name = 'caisse') AS \"{MARKER}version\"",
        f"(SELECT MAX(id) FROM {P}sessions) AS \"{MARKER}max_id\"",
    ]
    select += [f"(SELECT COUNT(*) FROM {P}{table}) AS \"{MARKER}{table}\"" for table in tables]
    return f"SELECT {', '.join(select)}, s.* FROM (SELECT 1) AS one LEFT JOIN {P}sessions AS s ON s.id = {sid}"


def split_probe(row: dict) -> tuple[dict[str, object], dict[str, object]]:
    """A probe row as (``{version, max_id, <optional table>: count}``, the session row)."""
    scalars = {k[len(MARKER):]: v for k, v in row.items() if k.startswith(MARKER)}
    session = {k: v for k, v in row.items() if not k.startswith(MARKER)}
    return scalars, session


@dataclass(frozen=True)
class ListQuery:
    """One list of the session: its FROM clause, the filter tying it to the session, its column expressions
    (in the order of the JSON arrays; the first is the id used as keyset)."""

    name: str
    table: str
    source: str
    where: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class CaisseSchema:
    """What the live caisse schema has: the optional tables present and the columns known to be absent."""

    tables: frozenset[str]
    absent: dict[str, frozenset[str]]

    def without(self, table: str, column: str) -> CaisseSchema:
        absent = dict(self.absent)
        absent[table] = absent.get(table, frozenset()) | {column}
        return CaisseSchema(self.tables, absent)

    def has(self, table: str, column: str) -> bool:
        return column not in self.absent.get(table, frozenset())


def _from(table: str) -> str:
    return f"{P}{table} AS {ALIASES[table]}"


def session_lists(session_id: int, schema: CaisseSchema, session_columns: frozenset[str]) -> list[ListQuery]:
    """The lists that make up a session, restricted to what ``schema`` says exists."""
    sid = sql_int(session_id)
    tabs_of_session = f"SELECT tab.id FROM {_from('tabs')} WHERE tab.session = {sid}"

    def columns(table: str) -> tuple[str, ...]:
        alias = ALIASES[table]
        out = []
        for column in LIST_COLUMNS[table]:
            if not schema.has(table, column):
                out.append("NULL")
            elif column in TEXT_COLUMNS:
                # CAST: a BLOB would make json_array() fail; as TEXT it reads normally when it is UTF-8.
                out.append(f"CAST({alias}.{column} AS TEXT)")
            else:
                out.append(f"{alias}.{column}")
        return tuple(out)

    lists = [
        ListQuery("tabs", "tabs", _from("tabs"), f"tab.session = {sid}", columns("tabs")),
        ListQuery(
            "items",
            "tabs_items",
            f"{_from('tabs_items')} LEFT JOIN {_from('products')} ON prod.id = item.product",
            f"item.tab IN ({tabs_of_session})",
            columns("tabs_items") + ("prod.category",),
        ),
        ListQuery("payments", "tabs_payments", _from("tabs_payments"), f"pay.tab IN ({tabs_of_session})",
                  columns("tabs_payments")),
    ]
    method_refs = [f"SELECT pay.method FROM {_from('tabs_payments')} WHERE pay.tab IN ({tabs_of_session})"]
    if "sessions_balances" in schema.tables:
        lists.append(ListQuery("balances", "sessions_balances", _from("sessions_balances"),
                               f"bal.id_session = {sid}", columns("sessions_balances")))
        method_refs.append(f"SELECT bal.id_method FROM {_from('sessions_balances')} WHERE bal.id_session = {sid}")
    if schema.has("tabs_items", "id_method"):
        method_refs.append(
            f"SELECT item.id_method FROM {_from('tabs_items')} WHERE item.tab IN ({tabs_of_session})"
        )
    lists.append(ListQuery("methods", "methods", _from("methods"), f"meth.id IN ({' UNION '.join(method_refs)})",
                           columns("methods")))
    lists.append(
        ListQuery(
            "categories",
            "categories",
            _from("categories"),
            f"cat.id IN (SELECT prod.category FROM {_from('products')} WHERE prod.id IN "
            f"(SELECT item.product FROM {_from('tabs_items')} WHERE item.tab IN ({tabs_of_session})))",
            columns("categories"),
        )
    )
    if "locations" in schema.tables and "id_location" in session_columns:
        lists.append(ListQuery("location", "locations", _from("locations"),
                               f"loc.id = (SELECT s.id_location FROM {_from('sessions')} WHERE s.id = {sid})",
                               columns("locations")))
    return lists


def body_sql(session_id: int, pages: list[tuple[ListQuery, int]], page_size: int, with_counts: bool) -> str:
    """One row: ``closed`` (NULL once the session is gone), each list's next page after its cursor id as a
    JSON array of arrays, and, if ``with_counts``, the ``n_<list>`` row counts."""
    sid = sql_int(session_id)
    limit = sql_int(page_size)
    select = [f"(SELECT s.closed FROM {_from('sessions')} WHERE s.id = {sid}) AS \"closed\""]
    for query, after in pages:
        key = query.columns[0]
        inner = ", ".join(f"{expr} AS c{n}" for n, expr in enumerate(query.columns))
        outer = ", ".join(f"c{n}" for n in range(len(query.columns)))
        select.append(
            f"(SELECT json_group_array(json_array({outer})) FROM (SELECT {inner} FROM {query.source} "
            f"WHERE {query.where} AND {key} > {sql_int(after)} ORDER BY {key} LIMIT {limit})) AS \"{query.name}\""
        )
        if with_counts:
            select.append(f"(SELECT COUNT(*) FROM {query.source} WHERE {query.where}) AS \"n_{query.name}\"")
    return "SELECT " + ",\n".join(select)
