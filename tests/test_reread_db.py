"""The test databases' DDL (tests/paheko_db.py) must not drift from the real caisse schema in the fixture."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.paheko_db import PahekoDB

FIXTURE = Path(__file__).parent / "fixtures" / "paheko-caisse.sqlite"


def columns(path: Path) -> dict[str, dict[str, tuple[str, int]]]:
    """{table: {column: (declared type, not null)}} for plugins and the caisse tables."""
    con = sqlite3.connect(path)
    try:
        tables = [name for (name,) in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND (name = 'plugins' OR name LIKE 'plugin_pos_%')")]
        return {
            table: {row[1]: (row[2].upper(), row[3]) for row in con.execute(f"PRAGMA table_info({table})")}
            for table in tables
        }
    finally:
        con.close()


@pytest.fixture(scope="module")
def real():
    return columns(FIXTURE)


def test_modern_ddl_matches_the_real_schema(tmp_path, real):
    PahekoDB(tmp_path / "m.sqlite").close()
    ours = columns(tmp_path / "m.sqlite")
    assert ours, "no table built"
    for table, cols in ours.items():
        assert table in real, f"{table} does not exist in Paheko"
        assert cols == real[table], f"{table} differs from Paheko's"


def test_legacy_ddl_differs_only_as_documented(tmp_path, real):
    PahekoDB(tmp_path / "l.sqlite", layout="legacy").close()
    ours = columns(tmp_path / "l.sqlite")
    assert "plugin_pos_sessions_balances" not in ours
    legacy_only = {"open_amount", "close_amount", "error_amount"}
    expected_sessions = {c: v for c, v in real["plugin_pos_sessions"].items() if c not in {"result", "nb_tabs"}}
    assert {c: v for c, v in ours["plugin_pos_sessions"].items() if c not in legacy_only} == expected_sessions
    assert set(ours["plugin_pos_sessions"]) >= legacy_only
    assert set(real["plugin_pos_tabs_items"]) - set(ours["plugin_pos_tabs_items"]) == {"id_method"}
    assert set(real["plugin_pos_tabs_payments"]) - set(ours["plugin_pos_tabs_payments"]) == {"type"}
    for table in set(ours) - {"plugin_pos_sessions"}:
        assert set(ours[table]) <= set(real[table]), table
