"""The acceptance suite's harness: one target (the Recyclic stand-in, or a real Recyclic named by the environment),
a Paheko (the stand-in over the fixture database, or a real one), and the project driven only through its public
surfaces — a configuration file, the ``paheko-recyclic`` command in a subprocess — then everything read back
through Recyclic's and Paheko's own APIs. No import of the receiver's internals: they are being restructured.

Environment for a real Recyclic (all required, else the real target is skipped): ``PAHEKO_RECYCLIC_RECYCLIC_URL``
(with its prefix, e.g. ``https://recyclic.example.org/api/v1``), ``_USER``, ``_PASSWORD``, ``_PIN``, ``_SITE``,
``_REGISTER`` (a register kept for deferred entry), ``_OPERATOR``, ``_CATEGORIES`` (JSON, name → uuid; must name
the fixture's Paheko categories). For a real Paheko (optional): ``PAHEKO_RECYCLIC_PAHEKO_URL``,
``PAHEKO_RECYCLIC_PAHEKO_USER``, ``PAHEKO_RECYCLIC_PAHEKO_PASSWORD``, ``PAHEKO_RECYCLIC_PAHEKO_SESSIONS`` (ids of
closed sessions to forward, e.g. ``1,2``).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RECYCLIC_ENV = ("URL", "USER", "PASSWORD", "PIN", "SITE", "REGISTER", "OPERATOR", "CATEGORIES")
#: The fixture's Paheko payment methods → Recyclic codes (a person's choice, as in the demo).
METHODS = {"Espèces": "cash", "Chèque": "check", "CB": "card", "Monnaie locale": "transfer"}
NOTE = re.compile(r"^Paheko (?P<source>\S+) session (?P<session>\d+) ticket (?P<tab>\d+)$")
COMMAND = [str(Path(sys.executable).with_name("paheko-recyclic"))]


@dataclass
class Target:
    """A Recyclic to forward to, and how to reach it as the forwarder's user."""

    name: str
    url: str
    username: str
    password: str
    pin: str
    site: str
    register: str
    operator: str
    categories: dict[str, str]  # Paheko category name -> Recyclic category uuid
    pace_logins: bool = False  # a real Recyclic allows 10 logins a minute per address
    logins: deque = field(default_factory=deque)
    _token: str | None = None

    def before_login(self) -> None:
        """Keep our own logins under Recyclic's 10 per minute (every worker run logs in once)."""
        if self.pace_logins:
            while len(self.logins) >= 8 and time.monotonic() - self.logins[0] < 61:
                time.sleep(max(0.5, 61 - (time.monotonic() - self.logins[0])))
                while self.logins and time.monotonic() - self.logins[0] >= 61:
                    self.logins.popleft()
        self.logins.append(time.monotonic())

    def http(self) -> httpx.Client:
        """A client logged in as the forwarder's user (one login per target, reused)."""
        if self._token is None:
            self.before_login()
            answer = httpx.post(f"{self.url}/auth/login", json={"username": self.username, "password": self.password},
                                timeout=30)
            answer.raise_for_status()
            self._token = answer.json()["access_token"]
        return httpx.Client(base_url=self.url + "/", headers={"Authorization": f"Bearer {self._token}"}, timeout=30)


def real_recyclic() -> Target | None:
    values = {name: os.environ.get(f"PAHEKO_RECYCLIC_RECYCLIC_{name}") for name in RECYCLIC_ENV}
    if not all(values.values()):
        return None
    return Target("real", values["URL"].rstrip("/"), values["USER"], values["PASSWORD"], values["PIN"],
                  values["SITE"], values["REGISTER"], values["OPERATOR"], json.loads(values["CATEGORIES"]),
                  pace_logins=True)


@dataclass
class Paheko:
    url: str
    user: str
    password: str
    sessions: list[int]

    def sql(self, query: str) -> list[dict[str, Any]]:
        answer = httpx.post(f"{self.url}/api/sql", json={"sql": query}, auth=(self.user, self.password), timeout=30)
        answer.raise_for_status()
        return answer.json()["results"]


def real_paheko() -> Paheko | None:
    url = os.environ.get("PAHEKO_RECYCLIC_PAHEKO_URL")
    if not url:
        return None
    sessions = [int(s) for s in os.environ.get("PAHEKO_RECYCLIC_PAHEKO_SESSIONS", "").split(",") if s.strip()]
    return Paheko(url.rstrip("/"), os.environ["PAHEKO_RECYCLIC_PAHEKO_USER"],
                  os.environ["PAHEKO_RECYCLIC_PAHEKO_PASSWORD"], sessions)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, dict):  # inline table
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value, ensure_ascii=False)


def toml_document(tables: dict[str, dict[str, Any]]) -> str:
    return "".join(f"[{name}]\n" + "".join(f"{json.dumps(k, ensure_ascii=False)} = {_toml(v)}\n"
                                           for k, v in body.items()) + "\n" for name, body in tables.items())


class Run:
    """One scenario: a fresh ledger and configuration, a source name of its own (so that its notes are found
    again even in a Recyclic that holds earlier runs), the project's CLI, and the read-backs."""

    def __init__(self, workdir: Path, target: Target, paheko: Paheko, recyclic_url: str):
        self.workdir, self.target, self.paheko, self.recyclic_url = workdir, target, paheko, recyclic_url
        self.source = "acc" + secrets.token_hex(4)
        self.config = workdir / "config.toml"
        self.env = {**os.environ, "ACC_SINK_PASSWORD": target.password, "ACC_SINK_PIN": target.pin,
                    "ACC_PAHEKO_SECRET": paheko.password}
        self.write_config(target.pin)

    def write_config(self, pin: str) -> None:
        self.env["ACC_SINK_PIN"] = pin
        s = f"sources.{self.source}"
        names = {row["name"] for row in self.paheko.sql("SELECT DISTINCT category_name AS name FROM plugin_pos_tabs_items")}
        missing = sorted(names - set(self.target.categories))
        if missing:
            pytest.fail(f"PAHEKO_RECYCLIC_RECYCLIC_CATEGORIES names no Recyclic category for {missing}")
        locations = [row["name"] for row in self.paheko.sql("SELECT name FROM plugin_pos_locations")]
        place = {"site": self.target.site, "register": self.target.register}
        self.config.write_text(toml_document({
            "receiver": {"ledger": "sqlite:///ledger.sqlite"},
            "worker": {"poll_interval": 1},
            s: {"timezone": "Europe/Paris"},
            f"{s}.webhook": {"user": "acceptance", "password": secrets.token_hex(16)},
            f"{s}.paheko": {"url": self.paheko.url, "api_user": self.paheko.user,
                            "api_password": {"env": "ACC_PAHEKO_SECRET"},
                            **({"first_session": min(self.paheko.sessions)} if self.paheko.sessions else {})},
            f"{s}.mapping": {"profile": "v2", "close_session": True, "default_operator": self.target.operator},
            f"{s}.mapping.locations": {name: place for name in locations},
            f"{s}.mapping.categories": {name: self.target.categories[name] for name in sorted(names)},
            f"{s}.mapping.methods": METHODS,
            f"{s}.mapping.policies": {"refunds": "skip"},
            f"{s}.sink": {"type": "recyclic", "url": self.recyclic_url, "username": self.target.username,
                          "password": {"env": "ACC_SINK_PASSWORD"}, "pin": {"env": "ACC_SINK_PIN"}},
        }), encoding="utf-8")

    # -- the project's CLI ----------------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run([*COMMAND, "--config", str(self.config), *args], cwd=self.workdir, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def worker_once(self) -> subprocess.CompletedProcess:
        self.target.before_login()
        done = self.cli("worker", "--once")
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def start_worker(self) -> subprocess.Popen:
        self.target.before_login()
        return subprocess.Popen([*COMMAND, "--config", str(self.config), "worker"], cwd=self.workdir, env=self.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def ledger(self, *args: str) -> str:
        done = self.cli("ledger", *args)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def settled_sessions(self) -> Counter:
        """Ledger states of this run's sessions, as ``ledger list`` prints them."""
        text = self.ledger("list", "--source", self.source)
        states = ("forwarded", "held", "failed", "dead", "notified", "snapshot", "mapped")
        return Counter(word for line in text.splitlines() for word in line.split() if word in states)

    # -- what Recyclic holds -------------------------------------------------------------------------

    def recyclic_sales(self) -> tuple[dict[tuple[int, int], list[dict]], dict[int, set[str]], list[dict]]:
        """This run's sales found back through Recyclic's API: ``{(session, tab): [sale with items]}``,
        ``{paheko session: {recyclic session ids}}`` and the Recyclic sessions concerned (detail)."""
        by_tab: dict[tuple[int, int], list[dict]] = {}
        sessions: dict[int, set[str]] = {}
        details = []
        with self.target.http() as http:
            skip = 0
            while True:
                page = http.get("cash-sessions/", params={"operator_id": self.target.operator, "include_empty": "true",
                                                          "limit": 100, "skip": skip}).json()
                for listed in page["data"]:
                    detail = http.get(f"cash-sessions/{listed['id']}").json()
                    mine = [s for s in detail["sales"] if (m := NOTE.match(s.get("note") or ""))
                            and m["source"] == self.source]
                    if mine:
                        details.append(detail)
                    for sale in mine:
                        m = NOTE.match(sale["note"])
                        key = (int(m["session"]), int(m["tab"]))
                        by_tab.setdefault(key, []).append(http.get(f"sales/{sale['id']}").json())
                        sessions.setdefault(key[0], set()).add(detail["id"])
                skip += page["limit"]
                if skip >= page["total"]:
                    break
        return by_tab, sessions, details


def paheko_tabs(paheko: Paheko, sessions: list[int]) -> dict[tuple[int, int], dict[str, Any]]:
    """Each Paheko tab of ``sessions``: its lines and payments, in cents and grams."""
    ids = ",".join(str(int(s)) for s in sessions)
    tabs: dict[tuple[int, int], dict[str, Any]] = {}
    for row in paheko.sql("SELECT t.session, t.id AS tab, i.qty, i.total, i.weight, i.category_name, i.type "
                          f"FROM plugin_pos_tabs t JOIN plugin_pos_tabs_items i ON i.tab = t.id "
                          f"WHERE t.session IN ({ids}) ORDER BY i.id"):
        tab = tabs.setdefault((row["session"], row["tab"]), {"lines": [], "payments": Counter()})
        tab["lines"].append(row)
    for row in paheko.sql("SELECT t.session, p.tab, p.amount, m.name FROM plugin_pos_tabs_payments p "
                          "JOIN plugin_pos_tabs t ON t.id = p.tab JOIN plugin_pos_methods m ON m.id = p.method "
                          f"WHERE t.session IN ({ids})"):
        tabs.setdefault((row["session"], row["tab"]), {"lines": [], "payments": Counter()})["payments"][
            METHODS.get(row["name"], row["name"])] += row["amount"]
    return tabs


def cents(euros: float) -> int:
    return round(euros * 100)


def grams(kilograms: float) -> int:
    return round(kilograms * 1000)


def assert_recyclic_matches_paheko(run: Run, *, closed: bool = True) -> dict[str, int]:
    """Every whole sale tab of Paheko is in Recyclic exactly once, in one Recyclic session per Paheko session,
    to the cent and the gram (lines, total, payments); nothing else of this run is there. Returns figures."""
    tabs = paheko_tabs(run.paheko, run.paheko.sessions)
    found, sessions, details = run.recyclic_sales()
    duplicated = {key: len(sales) for key, sales in found.items() if len(sales) != 1}
    assert not duplicated, f"tickets found more than once in Recyclic: {duplicated}"
    assert all(len(ids) == 1 for ids in sessions.values()), sessions
    assert set(found) <= set(tabs), "a sale names a ticket Paheko does not have"
    whole = {key for key, tab in tabs.items() if tab["lines"] and all(
        line["type"] == 0 and line["total"] >= 0 and line["qty"] > 0 for line in tab["lines"])
        and all(amount > 0 for amount in tab["payments"].values())}
    assert whole <= set(found), f"whole sale tickets missing in Recyclic: {sorted(whole - set(found))}"
    totals = Counter()
    for key, (sale,) in found.items():
        tab = tabs[key]
        expected = sorted((run.target.categories[line["category_name"]], line["qty"], line["total"],
                           line["qty"] * (line["weight"] or 0))
                          for line in tab["lines"] if line["type"] == 0 and line["total"] >= 0 and line["qty"] > 0)
        got = sorted((item["category"], item["quantity"], cents(item["total_price"]), grams(item["weight"]))
                     for item in sale["items"])
        assert got == expected, (key, got, expected)
        assert cents(sale["total_amount"]) == sum(line[2] for line in expected), key
        paid = Counter()
        for payment in sale["payments"]:  # the code sent; ``payment_method`` reads "card" for any bank code
            paid[payment.get("payment_method_code") or payment["payment_method"]] += cents(payment["amount"])
        assert sum(paid.values()) == cents(sale["total_amount"]), key
        if key in whole:
            assert paid == +tab["payments"], (key, paid, tab["payments"])
        totals["sales"] += 1
        totals["cents"] += cents(sale["total_amount"])
        totals["grams"] += sum(line[3] for line in expected)
    if closed:
        assert {d["status"] for d in details} == {"closed"}, [(d["id"], d["status"]) for d in details]
    totals["recyclic_sessions"] = len(details)
    return dict(totals)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def copy_fixture_db(workdir: Path) -> Path:
    db = workdir / "paheko.sqlite"
    shutil.copy(FIXTURES / "paheko-caisse.sqlite", db)
    return db


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def iter_lines(text: str) -> Iterator[str]:
    yield from (line for line in text.splitlines() if line.strip())
