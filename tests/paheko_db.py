"""Builders of Paheko caisse databases for tests, with this project's own DDL (written from
/work/shared/facts/paheko.md §2; ``test_reread_db.py`` checks it against the real fixture's schema).

``PahekoDB(path, layout="0.8.12+" | "legacy")`` creates the tables; methods add reference data, sessions,
tabs, items and payments, and :meth:`PahekoDB.close_session` closes a session the way the plugin does
(balances' close/error amounts, ``result``, ``nb_tabs``), unless told to store wrong figures.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path

CORE_DDL = """
CREATE TABLE plugins (
    id INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, label TEXT NOT NULL, description TEXT NULL,
    author TEXT NULL, author_url TEXT NULL, version TEXT NOT NULL, menu INT NOT NULL DEFAULT 0,
    home_button INT NOT NULL DEFAULT 0, restrict_section TEXT NULL, restrict_level INT NULL, config TEXT NULL,
    enabled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE plugin_pos_categories (id INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, account TEXT NULL);
CREATE TABLE plugin_pos_products (
    id INTEGER NOT NULL PRIMARY KEY, category INTEGER NOT NULL REFERENCES plugin_pos_categories (id),
    name TEXT NOT NULL, description TEXT NULL, price INTEGER NOT NULL, purchase_price INTEGER NULL,
    qty INTEGER NOT NULL DEFAULT 1, stock INTEGER NULL, weight INTEGER NULL, image TEXT NULL, code TEXT NULL,
    archived INTEGER NOT NULL DEFAULT 0, id_fee INTEGER NULL
);
CREATE TABLE plugin_pos_locations (id INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE plugin_pos_methods (
    id INTEGER NOT NULL PRIMARY KEY, id_location INTEGER NULL REFERENCES plugin_pos_locations (id),
    name TEXT NOT NULL, type INTEGER NOT NULL DEFAULT 0, min INTEGER NULL, max INTEGER NULL, account TEXT NULL,
    is_default INTEGER NOT NULL DEFAULT 0, enabled INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE plugin_pos_tabs (
    id INTEGER NOT NULL PRIMARY KEY, session INTEGER NOT NULL REFERENCES plugin_pos_sessions (id),
    name TEXT NULL, user_id INTEGER NULL, opened TEXT NOT NULL, closed TEXT NULL
);
CREATE INDEX plugin_pos_tabs_session ON plugin_pos_tabs (session);
"""

MODERN_DDL = """
CREATE TABLE plugin_pos_sessions (
    id INTEGER NOT NULL PRIMARY KEY, id_location INTEGER NULL REFERENCES plugin_pos_locations (id),
    opened TEXT NOT NULL, closed TEXT NULL, open_user TEXT NULL, close_user TEXT NULL,
    result INTEGER NULL, nb_tabs INTEGER NULL
);
CREATE TABLE plugin_pos_sessions_balances (
    id INTEGER NOT NULL PRIMARY KEY, id_session INTEGER NOT NULL REFERENCES plugin_pos_sessions (id),
    id_method INTEGER NULL REFERENCES plugin_pos_methods (id), open_amount INTEGER NOT NULL,
    close_amount INTEGER NULL, error_amount INTEGER NULL
);
CREATE UNIQUE INDEX plugin_pos_sessions_balances_unique ON plugin_pos_sessions_balances (id_session, id_method);
CREATE TABLE plugin_pos_tabs_items (
    id INTEGER NOT NULL PRIMARY KEY, tab INTEGER NOT NULL REFERENCES plugin_pos_tabs (id), added TEXT NOT NULL,
    product INTEGER NULL REFERENCES plugin_pos_products (id), qty INTEGER NOT NULL, price INTEGER NOT NULL,
    total INTEGER NOT NULL, weight INTEGER NULL, name TEXT NOT NULL, category_name TEXT NOT NULL,
    description TEXT NULL, account TEXT NULL, type INTEGER NOT NULL DEFAULT 0, pricing INTEGER NOT NULL DEFAULT 0,
    id_fee INTEGER NULL, id_subscription INTEGER NULL, id_parent_item INTEGER NULL, id_method INTEGER NULL
);
CREATE INDEX plugin_pos_tabs_items_tab ON plugin_pos_tabs_items (tab);
CREATE TABLE plugin_pos_tabs_payments (
    id INTEGER NOT NULL PRIMARY KEY, tab INTEGER NOT NULL REFERENCES plugin_pos_tabs (id),
    method INTEGER NOT NULL REFERENCES plugin_pos_methods (id), date TEXT NOT NULL, amount INTEGER NOT NULL,
    reference TEXT NULL, account TEXT NULL, type INTEGER NOT NULL
);
CREATE INDEX plugin_pos_tabs_payments_tab ON plugin_pos_tabs_payments (tab);
"""

# Before caisse 0.8.12: one cash drawer on the session, no balances table, no payment type, no item id_method.
LEGACY_DDL = """
CREATE TABLE plugin_pos_sessions (
    id INTEGER NOT NULL PRIMARY KEY, id_location INTEGER NULL REFERENCES plugin_pos_locations (id),
    opened TEXT NOT NULL, closed TEXT NULL, open_user TEXT NULL, close_user TEXT NULL,
    open_amount INTEGER NULL, close_amount INTEGER NULL, error_amount INTEGER NULL
);
CREATE TABLE plugin_pos_tabs_items (
    id INTEGER NOT NULL PRIMARY KEY, tab INTEGER NOT NULL REFERENCES plugin_pos_tabs (id), added TEXT NOT NULL,
    product INTEGER NULL REFERENCES plugin_pos_products (id), qty INTEGER NOT NULL, price INTEGER NOT NULL,
    total INTEGER NOT NULL, weight INTEGER NULL, name TEXT NOT NULL, category_name TEXT NOT NULL,
    description TEXT NULL, account TEXT NULL, type INTEGER NOT NULL DEFAULT 0, pricing INTEGER NOT NULL DEFAULT 0,
    id_fee INTEGER NULL, id_subscription INTEGER NULL, id_parent_item INTEGER NULL
);
CREATE TABLE plugin_pos_tabs_payments (
    id INTEGER NOT NULL PRIMARY KEY, tab INTEGER NOT NULL REFERENCES plugin_pos_tabs (id),
    method INTEGER NOT NULL REFERENCES plugin_pos_methods (id), date TEXT NOT NULL, amount INTEGER NOT NULL,
    reference TEXT NULL, account TEXT NULL
);
"""

CASH, TRACKED, DEBT, WALLET = 1, 0, 2, 3
PRICING_QTY, PRICING_PER_KG, PRICING_SINGLE = 0, 1, 2


class PahekoDB:
    """A caisse database under construction; every method returns the new row's id."""

    def __init__(self, path: str | Path, *, layout: str = "0.8.12+", version: str | None = None, create: bool = True):
        """``create=False`` adds to an existing Paheko database (e.g. a copy of the fixture) instead."""
        if layout not in ("0.8.12+", "legacy"):
            raise ValueError(layout)
        self.path = Path(path)
        self.layout = layout
        self.con = sqlite3.connect(self.path, isolation_level=None)
        if not create:
            return
        self.con.executescript(CORE_DDL + (MODERN_DDL if layout == "0.8.12+" else LEGACY_DDL))
        self._insert("plugins", name="caisse", label="Caisse", version=version or ("0.8.12" if layout != "legacy" else "0.8.7"), enabled=1)

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> PahekoDB:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _insert(self, table: str, **values) -> int:
        names = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        return self.con.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", tuple(values.values())).lastrowid

    def location(self, name: str) -> int:
        return self._insert("plugin_pos_locations", name=name)

    def method(self, name: str, type: int, account: str | None, location: int | None = None) -> int:
        return self._insert("plugin_pos_methods", name=name, type=type, account=account, id_location=location)

    def category(self, name: str, account: str | None) -> int:
        return self._insert("plugin_pos_categories", name=name, account=account)

    def product(self, category: int, name: str, price: int, weight: int | None = None) -> int:
        return self._insert("plugin_pos_products", category=category, name=name, price=price, weight=weight)

    def delete_product(self, product: int) -> None:
        """What ON DELETE SET NULL does to the items when a product is deleted."""
        self.con.execute("UPDATE plugin_pos_tabs_items SET product = NULL WHERE product = ?", (product,))
        self.con.execute("DELETE FROM plugin_pos_products WHERE id = ?", (product,))

    def open_session(
        self, opened: str, *, location: int | None = None, user: str = "Alice", cash: dict[int, int] | int = 0
    ) -> int:
        """Open a session; ``cash`` is {method id: open amount} (0.8.12+) or the drawer's amount (legacy)."""
        if self.layout == "legacy":
            return self._insert("plugin_pos_sessions", opened=opened, id_location=location, open_user=user, open_amount=cash)
        session = self._insert("plugin_pos_sessions", opened=opened, id_location=location, open_user=user)
        for method, amount in dict(cash).items():
            self._insert("plugin_pos_sessions_balances", id_session=session, id_method=method, open_amount=amount)
        return session

    def tab(self, session: int, opened: str, name: str | None = None, user_id: int | None = None) -> int:
        return self._insert("plugin_pos_tabs", session=session, opened=opened, closed=opened, name=name, user_id=user_id)

    def item(
        self, tab: int, added: str, name: str, category_name: str, *, price: int, qty: int = 1,
        product: int | None = None, weight: int | None = None, pricing: int = PRICING_QTY, type: int = 0,
        account: str | None = None, description: str | None = None, id_method: int | None = None,
        id_fee: int | None = None, id_subscription: int | None = None, id_parent_item: int | None = None,
    ) -> int:
        """A tab line; its total follows the plugin's pricing rules (per kg: qty × price × grams / 1000, truncated)."""
        if pricing == PRICING_PER_KG:
            total = int(qty * price * weight / 1000)
        elif pricing == PRICING_SINGLE:
            total = price
        else:
            total = qty * price
        values = dict(
            tab=tab, added=added, product=product, qty=qty, price=price, total=total, weight=weight, name=name,
            category_name=category_name, description=description, account=account, type=type, pricing=pricing,
            id_fee=id_fee, id_subscription=id_subscription, id_parent_item=id_parent_item,
        )
        if self.layout != "legacy":
            values["id_method"] = id_method
        return self._insert("plugin_pos_tabs_items", **values)

    def payment(self, tab: int, method: int, amount: int, date: str, reference: str | None = None) -> int:
        account, type_ = self.con.execute("SELECT account, type FROM plugin_pos_methods WHERE id = ?", (method,)).fetchone()
        values = dict(tab=tab, method=method, date=date, amount=amount, reference=reference, account=account)
        if self.layout != "legacy":
            values["type"] = type_
        return self._insert("plugin_pos_tabs_payments", **values)

    def close_session(
        self, session: int, closed: str, close: dict[int, int] | int, *, user: str = "Bob",
        result: int | None = None, nb_tabs: int | None = None,
    ) -> None:
        """Close like the plugin: close/error amounts per drawer, ``result`` and ``nb_tabs`` (0.8.12+).
        ``result``/``nb_tabs`` given explicitly store those (wrong) figures instead."""
        c = self.con
        paid = dict(c.execute(
            "SELECT p.method, SUM(p.amount) FROM plugin_pos_tabs_payments p JOIN plugin_pos_tabs t ON t.id = p.tab "
            "WHERE t.session = ? GROUP BY p.method", (session,)).fetchall())
        if self.layout == "legacy":
            cash = [m for (m,) in c.execute("SELECT id FROM plugin_pos_methods WHERE type = 1")]
            (opened,) = c.execute("SELECT open_amount FROM plugin_pos_sessions WHERE id = ?", (session,)).fetchone()
            error = close - (opened + sum(paid.get(m, 0) for m in cash))
            c.execute("UPDATE plugin_pos_sessions SET closed = ?, close_user = ?, close_amount = ?, error_amount = ? "
                      "WHERE id = ?", (closed, user, close, error, session))
            return
        for method, amount in close.items():
            c.execute("UPDATE plugin_pos_sessions_balances SET close_amount = ?, "
                      "error_amount = ? - (open_amount + ?) WHERE id_session = ? AND id_method = ?",
                      (amount, amount, paid.get(method, 0), session, method))
        (total,) = c.execute("SELECT COALESCE(SUM(i.total), 0) FROM plugin_pos_tabs_items i JOIN plugin_pos_tabs t "
                             "ON t.id = i.tab WHERE t.session = ?", (session,)).fetchone()
        (count,) = c.execute("SELECT COUNT(*) FROM plugin_pos_tabs WHERE session = ?", (session,)).fetchone()
        c.execute("UPDATE plugin_pos_sessions SET closed = ?, close_user = ?, result = ?, nb_tabs = ? WHERE id = ?",
                  (closed, user, total if result is None else result, count if nb_tabs is None else nb_tabs, session))


def reference_data(db: PahekoDB) -> dict[str, int]:
    """Two locations, the usual methods (cash, cheque, debt, card, wallet, a second cash drawer), categories, products."""
    ids = {
        "shop": db.location("Boutique"),
        "annex": db.location("Annexe"),
    }
    ids["cash"] = db.method("Espèces", CASH, "530", ids["shop"])
    ids["cheque"] = db.method("Chèque", TRACKED, "5112", ids["shop"])
    ids["debt"] = db.method("Ardoise", DEBT, "4110", ids["shop"])
    ids["card"] = db.method("CB", TRACKED, "5115", ids["shop"])
    ids["wallet"] = db.method("Porte-monnaie", WALLET, "4190", ids["shop"])
    ids["annex_cash"] = db.method("Espèces annexe", CASH, "531", ids["annex"])
    ids["clothes"] = db.category("Vêtements", "7071")
    ids["books"] = db.category("Livres", "7072")
    ids["tshirt"] = db.product(ids["clothes"], "T-shirt", 300, 200)
    ids["bulk"] = db.product(ids["clothes"], "Vrac au kilo", 800, -2)
    ids["book"] = db.product(ids["books"], "Livre", 100, 150)
    return ids


def big_session(db: PahekoDB, ids: dict[str, int], n_items: int, *, per_tab: int = 5, day: str = "2026-12-01") -> int:
    """A closed session of ``n_items`` T-shirt lines (qty 1, 300 c, 200 g), ``per_tab`` per tab, each tab paid cash."""
    session = db.open_session(f"{day} 09:00:00", location=ids["shop"], cash={ids["cash"]: 0})
    with db.con:
        db.con.execute("BEGIN")
        for start in range(0, n_items, per_tab):
            tab = db.tab(session, f"{day} 10:00:00", name=f"Client {start // per_tab + 1}")
            lines = min(per_tab, n_items - start)
            for _ in range(lines):
                db.item(tab, f"{day} 10:00:00", "T-shirt", "Vêtements", price=300, weight=200, product=ids["tshirt"], account="7071")
            db.payment(tab, ids["cash"], 300 * lines, f"{day} 10:00:00")
    db.close_session(session, f"{day} 18:00:00", {ids["cash"]: 300 * n_items})
    return session


@contextmanager
def served(db_path: str | Path, *, source: str = "lab", user: str | None = None, secret: str | None = None, **client_options):
    """The local Paheko stand-in over real HTTP on 127.0.0.1, and a :class:`PahekoClient` logged into it.
    Yields ``(client, app)``; ``app.faults`` / ``app.stats`` are the stand-in's. Retries never sleep here."""
    from receiver.config import PahekoApi, Secret
    from receiver.dev.paheko import DEFAULT_CREDENTIALS, create_paheko_app
    from receiver.dev.server import LocalServer
    from receiver.reread.client import PahekoClient

    default_user, (default_secret, _level) = next(iter(DEFAULT_CREDENTIALS.items()))
    app = create_paheko_app(str(db_path), None)
    client_options.setdefault("sleep", lambda seconds: None)
    with LocalServer(app) as server:
        api = PahekoApi(
            url=server.url, api_user=user or default_user, api_password=Secret(secret or default_secret),
            connect_timeout=2.0, read_timeout=client_options.pop("read_timeout", 5.0),
        )
        with PahekoClient(source, api, **client_options) as client:
            yield client, app
