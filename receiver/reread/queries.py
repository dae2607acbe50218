"""The SQL sent to Paheko's ``/api/sql`` to re-read one session, built from validated ints and fixed text only.

Two steps (facts: no bound parameters, no PRAGMA, ``sqlite_master`` refused up to Paheko 1.3.21):

1. :func:`probe_sql` — one row: the caisse version, the highest session id, the session row itself, and every
   caisse table's column names, obtained with ``LEFT JOIN table ON 0`` (one all-NULL row per table, whatever its
   columns). Tables are delimited by marker columns because Paheko renames duplicate names (``id``, ``id_1``).
   A missing optional table makes Paheko answer ``no such table: X``; the caller drops it and probes again.
2. :func:`body_sql` — one row whose columns are JSON arrays (``json_group_array(json_array(...))``) of the
   session's lists, each a keyset page on ``id``, plus, on the first page, the row count of each list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from receiver.reread.client import sql_int

P = "plugin_pos_"
MARKER = "#"

# Tables the probe inspects; the optional ones may be missing in older caisse versions.
REQUIRED_TABLES = ("sessions", "tabs", "tabs_items", "tabs_payments", "methods", "categories", "products")
OPTIONAL_TABLES = ("sessions_balances", "locations")

# Columns read per table, in this order. A column absent from the live schema reads as None.
TEXT_COLUMNS = frozenset(
    {"name", "open_user", "close_user", "opened", "closed", "added", "date", "category_name", "description",
     "account", "reference"}
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
    "methods": ("id", "name", "type", "is_cash", "account", "id_location"),
    "categories": ("id", "name", "account"),
}

_NO_SUCH_TABLE = re.compile(r"no such table: (?:main\.)?(\w+)")
_DUPLICATE = re.compile(r"^(.*)_(\d+)$")


def missing_table(paheko_message: str) -> str | None:
    """The caisse table name (without prefix) in a ``no such table`` error, else None."""
    match = _NO_SUCH_TABLE.search(paheko_message)
    if match and match.group(1).startswith(P):
        return match.group(1)[len(P):]
    return None


def probe_sql(session_id: int, tables: tuple[str, ...]) -> str:
    """Version, highest session id, the session row and the columns of ``tables`` (session first)."""
    sid = sql_int(session_id)
    others = [t for t in tables if t != "sessions"]
    select = [
        f"(SELECT version FROM plugins WHERE name = 'caisse') AS \"{MARKER}version\"",
        f"(SELECT MAX(id) FROM {P}sessions) AS \"{MARKER}max_id\"",
        f"'' AS \"{MARKER}sessions\"",
        "s.*",
    ]
    joins = [f"LEFT JOIN {P}sessions AS s ON s.id = {sid}"]
    for n, table in enumerate(others):
        select += [f"'' AS \"{MARKER}{table}\"", f"t{n}.*"]
        joins.append(f"LEFT JOIN {P}{table} AS t{n} ON 0")
    return f"SELECT {', '.join(select)} FROM (SELECT 1) AS one {' '.join(joins)}"


def split_probe(row: dict) -> tuple[dict[str, object], dict[str, dict[str, object]]]:
    """Split a probe row into its scalar values (version, max_id) and ``{table: {column: value}}``."""
    scalars: dict[str, object] = {}
    tables: dict[str, dict[str, object]] = {}
    seen: set[str] = set()
    current: dict[str, object] | None = None
    for key, value in row.items():
        if key.startswith(MARKER):
            name = key[len(MARKER):]
            if name in ("version", "max_id"):
                scalars[name] = value
            else:
                current = tables.setdefault(name, {})
            continue
        match = _DUPLICATE.match(key)
        column = match.group(1) if match and match.group(1) in seen else key
        seen.add(column)
        if current is not None:
            current[column] = value
    return scalars, tables


@dataclass(frozen=True)
class ListQuery:
    """One list of the session: its FROM clause, the filter tying it to the session, its id expression."""

    name: str
    source: str
    where: str
    columns: tuple[str, ...]  # SQL expressions, in the order of the JSON arrays


def session_lists(session_id: int, schema: dict[str, frozenset[str]]) -> list[ListQuery]:
    """The lists that make up a session, restricted to the tables and columns ``schema`` says exist."""
    sid = sql_int(session_id)
    tabs = f"SELECT id FROM {P}tabs WHERE session = {sid}"
    items_of_session = f"{P}tabs_items WHERE tab IN ({tabs})"

    def columns(table: str, alias: str) -> tuple[str, ...]:
        present = schema[table]
        out = []
        for column in LIST_COLUMNS[table]:
            if column not in present:
                out.append("NULL")
            elif column in TEXT_COLUMNS:
                # CAST: a BLOB would make json_array() fail; as TEXT it reads normally when it is UTF-8.
                out.append(f"CAST({alias}.{column} AS TEXT)")
            else:
                out.append(f"{alias}.{column}")
        return tuple(out)

    lists = [
        ListQuery("tabs", f"{P}tabs AS x", f"x.session = {sid}", columns("tabs", "x")),
        ListQuery(
            "items",
            f"{P}tabs_items AS x LEFT JOIN {P}products AS p ON p.id = x.product",
            f"x.tab IN ({tabs})",
            columns("tabs_items", "x") + ("p.category",),
        ),
        ListQuery("payments", f"{P}tabs_payments AS x", f"x.tab IN ({tabs})", columns("tabs_payments", "x")),
    ]
    method_refs = [f"SELECT method FROM {P}tabs_payments WHERE tab IN ({tabs})"]
    if "sessions_balances" in schema:
        lists.append(
            ListQuery(
                "balances",
                f"{P}sessions_balances AS x",
                f"x.id_session = {sid}",
                columns("sessions_balances", "x"),
            )
        )
        method_refs.append(f"SELECT id_method FROM {P}sessions_balances WHERE id_session = {sid}")
    if "id_method" in schema["tabs_items"]:
        method_refs.append(f"SELECT id_method FROM {items_of_session}")
    lists.append(
        ListQuery("methods", f"{P}methods AS x", f"x.id IN ({' UNION '.join(method_refs)})", columns("methods", "x"))
    )
    lists.append(
        ListQuery(
            "categories",
            f"{P}categories AS x",
            f"x.id IN (SELECT category FROM {P}products WHERE id IN (SELECT product FROM {items_of_session}))",
            columns("categories", "x"),
        )
    )
    if "locations" in schema and "id_location" in schema["sessions"]:
        lists.append(
            ListQuery(
                "location",
                f"{P}locations AS x",
                f"x.id = (SELECT id_location FROM {P}sessions WHERE id = {sid})",
                columns("locations", "x"),
            )
        )
    return lists


def body_sql(session_id: int, pages: list[tuple[ListQuery, int]], page_size: int, with_counts: bool) -> str:
    """One row: ``closed`` (is the session still there and closed), each list's page after its cursor id
    as a JSON array of arrays, and, if ``with_counts``, ``n_<list>`` row counts."""
    sid = sql_int(session_id)
    limit = sql_int(page_size)
    select = [f"(SELECT closed FROM {P}sessions WHERE id = {sid}) AS \"closed\""]
    for query, after in pages:
        inner = ", ".join(f"{expr} AS c{n}" for n, expr in enumerate(query.columns))
        outer = ", ".join(f"c{n}" for n in range(len(query.columns)))
        select.append(
            f"(SELECT json_group_array(json_array({outer})) FROM (SELECT {inner} FROM {query.source} "
            f"WHERE {query.where} AND x.id > {sql_int(after)} ORDER BY x.id LIMIT {limit})) AS \"{query.name}\""
        )
        if with_counts:
            select.append(f"(SELECT COUNT(*) FROM {query.source} WHERE {query.where}) AS \"n_{query.name}\"")
    return "SELECT " + ",\n".join(select)
