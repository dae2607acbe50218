"""Caisse data shapes seen on real tills, added to a copy of a Paheko database for the Paheko stand-in.

The bundled fixture has two tidy sessions. Real tills also hold (issue 10, from a real shop's 10 days and
Paheko 1.3.21 / 1.3.22 instances):

- a **0 € tab without any payment** ("Gratuit": a free item given away; the tab is closed with nothing paid);
- **multi-quantity lines with a per-unit weight** (4 trousers at 350 g: ``qty`` 4, ``weight`` 350 → 1 400 g);
- **deleted tabs**: ids with gaps (a tab opened by mistake and deleted before the close);
- a **till left open for days**: opened on a Friday, closed the next Monday;
- **Paheko 1.3.21's** ``closed`` stored in UTC while ``opened`` is local time: ``closed`` reads *earlier*
  than ``opened`` on a short session in winter (facts §5).

:func:`add_real_till_shapes` appends such sessions (closed, with balances, ``result`` and ``nb_tabs`` as the
plugin writes them) to a caisse database at the 0.8.12+ layout, and returns what it added.
``paheko-recyclic dev paheko --real-till-shapes`` serves a copy of ``--db`` with them.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["AddedSession", "add_real_till_shapes"]


@dataclass
class AddedSession:
    id: int
    shape: str
    tabs: list[int] = field(default_factory=list)
    deleted_tabs: list[int] = field(default_factory=list)


class _Till:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.location = conn.execute("SELECT MIN(id) FROM plugin_pos_locations").fetchone()[0]
        methods = {name: (mid, kind, account) for mid, name, kind, account in
                   conn.execute("SELECT id, name, type, account FROM plugin_pos_methods")}
        self.cash = next(m for m in methods.values() if m[1] == 1)
        self.card = next((m for m in methods.values() if m[1] == 0), self.cash)
        self.categories = dict(conn.execute("SELECT name, account FROM plugin_pos_categories"))

    def _insert(self, table: str, **values) -> int:
        names = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        return self.conn.execute(f"INSERT INTO plugin_pos_{table} ({names}) VALUES ({marks})",
                                 tuple(values.values())).lastrowid

    def session(self, opened: str, user: str, float_cents: int) -> int:
        session = self._insert("sessions", id_location=self.location, opened=opened, open_user=user)
        self._insert("sessions_balances", id_session=session, id_method=self.cash[0], open_amount=float_cents)
        return session

    def tab(self, session: int, opened: str, name: str) -> int:
        return self._insert("tabs", session=session, name=name, opened=opened, closed=opened)

    def item(self, tab: int, when: str, name: str, category: str, qty: int, price: int, grams: int | None) -> None:
        self._insert("tabs_items", tab=tab, added=when, qty=qty, price=price, total=qty * price, weight=grams,
                     name=name, category_name=category, account=self.categories.get(category), type=0, pricing=0)

    def pay(self, tab: int, when: str, method: tuple, amount: int) -> None:
        self._insert("tabs_payments", tab=tab, method=method[0], date=when, amount=amount, account=method[2],
                     type=method[1])

    def close(self, session: int, closed: str, user: str) -> None:
        """As the plugin does: balances' close/error amounts (counted = expected), ``result``, ``nb_tabs``."""
        (result,) = self.conn.execute(
            "SELECT COALESCE(SUM(i.total), 0) FROM plugin_pos_tabs_items i JOIN plugin_pos_tabs t ON t.id = i.tab "
            "WHERE t.session = ?", (session,)).fetchone()
        (nb_tabs,) = self.conn.execute("SELECT COUNT(*) FROM plugin_pos_tabs WHERE session = ?", (session,)).fetchone()
        (cash_in,) = self.conn.execute(
            "SELECT COALESCE(SUM(p.amount), 0) FROM plugin_pos_tabs_payments p JOIN plugin_pos_tabs t ON t.id = p.tab "
            "WHERE t.session = ? AND p.method = ?", (session, self.cash[0])).fetchone()
        self.conn.execute("UPDATE plugin_pos_sessions_balances SET close_amount = open_amount + ?, error_amount = 0 "
                          "WHERE id_session = ?", (cash_in, session))
        self.conn.execute("UPDATE plugin_pos_sessions SET closed = ?, close_user = ?, result = ?, nb_tabs = ? "
                          "WHERE id = ?", (closed, user, result, nb_tabs, session))


def add_real_till_shapes(db_path: str | Path) -> list[AddedSession]:
    """Append the real-till shapes to the caisse database at ``db_path`` (modified in place)."""
    conn = sqlite3.connect(db_path)
    try:
        with conn:
            till = _Till(conn)
            added = []

            # A till left open for days (Friday morning to Monday evening), with a free tab, a multi-quantity
            # line weighed per unit, and a tab deleted before the close (its id leaves a gap).
            weekend = till.session("2026-11-27 09:02:11", "Chantal (bénévole)", 5000)
            shape = AddedSession(weekend, "open for days; free tab; per-unit weights; deleted tab")
            free = till.tab(weekend, "2026-11-27 10:15:40", "Gratuit")
            till.item(free, "2026-11-27 10:15:52", "Livre abîmé (don)", "Livres", 1, 0, 300)
            plates = till.tab(weekend, "2026-11-27 11:03:05", "Mme Bernard")
            till.item(plates, "2026-11-27 11:03:20", "Pantalon", "Vêtements", 4, 150, 350)
            till.item(plates, "2026-11-27 11:04:02", "T-shirt", "Vêtements", 2, 300, 200)
            till.pay(plates, "2026-11-27 11:05:00", till.cash, 1200)
            mistake = till.tab(weekend, "2026-11-27 11:30:00", "erreur")
            monday = till.tab(weekend, "2026-11-30 17:20:31", "M. Petit")
            till.item(monday, "2026-11-30 17:21:00", "Chaise", "Mobilier", 2, 1200, 4000)
            till.pay(monday, "2026-11-30 17:22:10", till.card, 2400)
            # deleted before the close; a later tab exists, so its id stays a gap (SQLite reuses only the last id)
            conn.execute("DELETE FROM plugin_pos_tabs WHERE id = ?", (mistake,))
            till.close(weekend, "2026-11-30 18:40:12", "Chantal (bénévole)")
            shape.tabs, shape.deleted_tabs = [free, plates, monday], [mistake]
            added.append(shape)

            # Paheko 1.3.21: opened in local time (Europe/Paris, UTC+1 in winter), closed written in UTC.
            short = till.session("2026-12-01 14:05:00", "Alice (bénévole)", 5000)
            shape = AddedSession(short, "1.3.21: closed stored in UTC, opened local (closed reads earlier)")
            tab = till.tab(short, "2026-12-01 14:20:00", "Mme Martin")
            till.item(tab, "2026-12-01 14:20:10", "Livre de poche", "Livres", 3, 100, 150)
            till.pay(tab, "2026-12-01 14:21:00", till.cash, 300)
            till.close(short, "2026-12-01 13:35:00", "Alice (bénévole)")  # 14:35 local, in UTC
            shape.tabs = [tab]
            added.append(shape)
            return added
    finally:
        conn.close()
