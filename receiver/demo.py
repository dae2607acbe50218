"""``paheko-recyclic demo``: the whole pipeline on one machine, with nothing installed or configured.

A local Paheko serves a copy of the bundled database (two closed caisse sessions, captured from a
real Paheko); a local Recyclic (v2) receives; the receiver and a worker run in this process on
loopback. Session 2 is notified exactly as the Paheko module does (twice: idempotency), session 1
is not notified at all and must be found by the reconciliation poller.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import sqlite3
import string
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import click

from receiver.app import create_app
from receiver.commands.replay import CapturedRequest, send
from receiver.config import load_config
from receiver.dev.paheko import create_paheko_app
from receiver.dev.recyclic import CATEGORIES, DEFAULT_USERS, MACHINE_USER, MAIN_SITE, REPLAY_REGISTER, create_recyclic_app
from receiver.dev.server import LocalServer
from receiver.ledger import Ledger, State
from receiver.services import EXTENSION
from receiver.runner import Runner

SETTLED = (State.FORWARDED, State.HELD, State.DEAD)
#: Paheko category → the Recyclic category an operator picks in the stand-in's shop grid. "Électroménager"
#: has no namesake there (only "Petit électroménager" and "Gros électroménager"): a person's choice.
PAHEKO_CATEGORIES = {"Vêtements": "Vêtements", "Livres": "Livres", "Électroménager": "Petit électroménager",
                     "Mobilier": "Mobilier"}
PAHEKO_METHODS = {"Espèces": "cash", "Chèque": "check", "CB": "card", "Monnaie locale": "transfer"}


def _token(n: int) -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(n))


def demo_config(paheko_url: str, paheko_key: tuple[str, str], recyclic_url: str, webhook: tuple[str, str], *,
                ledger: str = "sqlite:///ledger.sqlite", close_session: bool = True) -> str:
    """The configuration file the demo runs on (kept in the work folder, to read and to reuse); benches and
    tests change its ledger, or keep sessions open in Recyclic."""
    category_ids = {c.name: c.id for c in CATEGORIES}
    categories = "\n".join(f'"{name}" = "{category_ids[ours]}"' for name, ours in PAHEKO_CATEGORIES.items())
    methods = "\n".join(f'"{name}" = "{code}"' for name, code in PAHEKO_METHODS.items())
    return f"""# Written by `paheko-recyclic demo`: a local Paheko and a local Recyclic on loopback.
[receiver]
ledger = "{ledger}"

[worker]
poll_interval = 1

[sources.lab]
timezone = "Europe/Paris"

[sources.lab.webhook]
user = "{webhook[0]}"
password = "{webhook[1]}"

[sources.lab.paheko]
url = "{paheko_url}"
api_user = "{paheko_key[0]}"
api_password = "{paheko_key[1]}"

[sources.lab.mapping]
close_session = {"true" if close_session else "false"}
default_operator = "{DEFAULT_USERS[1].id}"

[sources.lab.mapping.locations."Boutique principale"]
site = "{MAIN_SITE.id}"
register = "{REPLAY_REGISTER.id}"

[sources.lab.mapping.categories]
{categories}

[sources.lab.mapping.methods]
{methods}

[sources.lab.mapping.policies]
# Recyclic cannot receive a refund: the ticket's sale lines go, the return is left out and recorded
# (the default, written out).
refunds = "skip"

[sources.lab.sink]
type = "recyclic"
profile = "v2"
url = "{recyclic_url}/v1"
username = "{MACHINE_USER.username}"
password = "{MACHINE_USER.password}"
pin = "{MACHINE_USER.pin}"
"""


def module_payload(db: Path, session_id: int) -> dict:
    """The notification the Paheko module builds for a session (same fields, same SQL types)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        closed, result, nb_tabs = con.execute(
            "SELECT closed, result, nb_tabs FROM plugin_pos_sessions WHERE id = ?", (session_id,)).fetchone()
        payments = [
            {"method_id": m, "method": name, "total": total}
            for m, name, total in con.execute(
                "SELECT p.method, m.name, SUM(p.amount) FROM plugin_pos_tabs_payments p "
                "JOIN plugin_pos_tabs t ON t.id = p.tab JOIN plugin_pos_methods m ON m.id = p.method "
                "WHERE t.session = ? GROUP BY p.method ORDER BY p.method", (session_id,))
        ]
    finally:
        con.close()
    return {"event": "session.closed", "session_id": session_id, "closed": closed, "result": result,
            "nb_tabs": nb_tabs, "payments": payments, "module_version": "demo", "event_id": f"{session_id}-1"}


@dataclass
class Stack:
    """Everything the demo started, stopped in reverse order."""

    paheko: LocalServer
    recyclic: LocalServer
    receiver: LocalServer
    ledger: Ledger
    runner: Runner

    def close(self) -> None:
        self.runner.stop()
        for server in (self.receiver, self.recyclic, self.paheko):
            server.stop()
        self.ledger.close()


def _wait(ledger: Ledger, sessions: list[int], timeout: float) -> dict[int, object]:
    """The sessions' entries once all are settled (or at ``timeout``)."""
    deadline = time.monotonic() + timeout
    entries: dict = {}
    while time.monotonic() < deadline:
        entries = ledger.get_many("lab", sessions)
        if len(entries) == len(sessions) and all(e.state in SETTLED for e in entries.values()):
            break
        time.sleep(0.05)
    return entries


#: How a session came to the receiver, by ledger origin.
FOUND_BY = {"module": "notification", "poller": "poll", "backfill": "backfill"}
#: A marker left in the work folder, so that a later run may empty it (and only such a folder).
MARKER = ".paheko-recyclic-demo"


def _demo_file(path: Path) -> bool:
    """A file an earlier demo (before the marker existed) leaves in its folder."""
    return path.is_file() and (path.name in ("paheko.sqlite", "config.toml")
                               or path.name.startswith("ledger.sqlite") or path.name.startswith("forwarded-"))


def prepare_workdir(workdir: Path) -> None:
    """An empty work folder: created, or emptied if an earlier demo made it; any other non-empty folder is refused."""
    if workdir.exists() and not workdir.is_dir():
        raise click.ClickException(f"{workdir} is a file, not a folder")
    if workdir.is_dir() and any(workdir.iterdir()):
        if not (workdir / MARKER).is_file() and not all(_demo_file(p) for p in workdir.iterdir()):
            raise click.ClickException(
                f"{workdir} is not empty and was not made by the demo: choose another --workdir "
                "(the demo never deletes files it did not create)")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).write_text("Made by `paheko-recyclic demo`; the next demo run empties this folder.\n")


def _pipeline_lines(entries: dict, ledger: Ledger) -> list[str]:
    """Per session, in session order: how it was found and the states it went through (from the ledger)."""
    lines = []
    for session_id, entry in sorted(entries.items()):
        states: list[str] = []
        for change in ledger.history(entry.id):
            if not states or states[-1] != change["to_state"]:
                states.append(change["to_state"])
        found = FOUND_BY.get(entry.origin, entry.origin)
        lines.append(f"  session {session_id} (found by {found}): {' → '.join(states)}")
    return lines


@click.command()
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path(".paheko-recyclic/demo"),
              show_default=True, help="Where the demo keeps its Paheko copy, configuration and ledger. "
              "It must be empty, absent, or made by an earlier demo (which is then emptied).")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for the sessions to settle.")
def demo(workdir: Path, timeout: float) -> None:
    """Run the whole pipeline locally on bundled data and show what reached Recyclic.

    Starts a local Paheko (a copy of a real caisse database with two closed sessions), a local
    Recyclic, the receiver and a worker; notifies session 2 as the Paheko module would, lets the
    poller find session 1 on its own, and prints a table per session. Nothing to install or configure.
    """
    workdir = workdir.resolve()
    prepare_workdir(workdir)
    db = workdir / "paheko.sqlite"
    with resources.as_file(resources.files("receiver").joinpath("dev/data/paheko-caisse.sqlite")) as bundled:
        shutil.copy(bundled, db)
    paheko_key = ("demobridge", _token(24))
    webhook = ("demomodule", _token(24))

    click.echo("Starting a local Paheko, a local Recyclic, the receiver and a worker on 127.0.0.1 …")
    paheko = LocalServer(create_paheko_app(str(db), {paheko_key[0]: (paheko_key[1], "read")})).start()
    recyclic_app = create_recyclic_app("v2")
    recyclic = LocalServer(recyclic_app).start()
    config_path = workdir / "config.toml"
    config_path.write_text(demo_config(paheko.url, paheko_key, recyclic.url, webhook), encoding="utf-8")
    config = load_config(config_path)
    app = create_app(config)
    logging.getLogger("receiver").setLevel(logging.WARNING)  # the demo narrates; JSON logs are for servers
    ledger = app.extensions[EXTENSION].ledger
    receiver = LocalServer(app).start()
    runner = Runner(config, ledger)
    stack = Stack(paheko, recyclic, receiver, ledger, runner)
    click.echo(f"  Paheko   {paheko.url}  (copy of the bundled caisse database)")
    click.echo(f"  Recyclic {recyclic.url}/v1  (profile v2)")
    click.echo(f"  receiver {receiver.url}/api/paheko/caisse/v1/session-closed")
    try:
        click.echo("\nThe Paheko module notifies session 2 (twice, like a double click); the receiver answers")
        click.echo("in French, as the Paheko admin reads it in the module:")
        for _ in range(2):
            answer = send(CapturedRequest.from_payload(module_payload(db, 2)), receiver.url, webhook).json()
            click.echo(f"  → « {answer['message']} »")
        click.echo("Session 1 is not notified: the reconciliation poller must find it.\n")
        runner.start()
        entries = _wait(ledger, [1, 2], timeout)
        runner.stop()  # let the worker finish its step before the report reads the ledger
        click.echo("Pipeline (states recorded in the ledger):")
        for line in _pipeline_lines(entries, ledger):
            click.echo(line)
        _report(entries, ledger, recyclic_app, click.echo)
        click.echo(f"\nConfiguration: {config_path}\nLedger:        {workdir / 'ledger.sqlite'}")
        click.echo(f"Look closer:   python3 dev.py -- --config {config_path} ledger show lab:1")
        if len(entries) < 2 or not all(e.state in SETTLED for e in entries.values()):
            raise click.ClickException("the sessions did not settle in time")
    finally:
        stack.close()


def _report(entries: dict, ledger: Ledger, recyclic_app, echo) -> None:
    """One line per session: what Paheko holds, what Recyclic now holds, what was left out; reasons below."""
    from receiver.commands.ledger import amount as _amount
    from receiver.commands.ledger import table
    from receiver.sinks.recyclic.mapping.model import load_mapped

    store = recyclic_app.store
    rows, reasons = [], []
    for session_id, entry in sorted(entries.items()):
        snapshot = entry.snapshot or {}
        mapped = load_mapped(entry.mapped) if entry.mapped else None
        sale_ids = [f.sink_id for (kind, _), f in ledger.forwards_of(entry.id).items() if kind == "sale" and f.sink_id]
        sales = [store.sales[i] for i in sale_ids if i in store.sales]
        total = sum(s.total_amount for s in sales)
        grams = sum(line.weight_g for s in sales for line in s.items)
        paheko_tabs = len(snapshot.get("tabs", []))
        paheko_total = snapshot.get("totals", {}).get("items_total", 0)
        left_out = sum(p.amount_cents for p in mapped.skipped if p.item_id is not None) if mapped else 0
        rows.append([str(session_id), FOUND_BY.get(entry.origin, entry.origin), str(paheko_tabs), _amount(paheko_total),
                     str(len(sales)), _amount(total), f"{grams / 1000:.3f} kg", _amount(left_out), entry.state.value])
        if entry.reason and entry.state != State.FORWARDED:
            reasons.append(f"  session {session_id}: {entry.reason}")
        for reason in dict.fromkeys(part.reason for part in (mapped.skipped if mapped else ())):
            reasons.append(f"  session {session_id}: {reason}")
    headers = ["session", "found by", "Paheko tickets", "Paheko total", "Recyclic sales", "Recyclic total",
               "weight", "left out", "state"]
    echo("")
    echo(table(headers, rows, width=200, wrap=len(headers) - 1))
    echo("\nPaheko total = Recyclic total + left out. \"left out\" is what Recyclic cannot receive and was")
    echo("recorded instead of sent (refund lines, tickets no longer balanced without them); it is negative")
    echo("when a refund was left out (Recyclic then holds more than Paheko's net total).")
    if reasons:
        echo("\nWhy, as recorded in the ledger and shown to the Paheko admin (in French):")
        for line in reasons:
            echo(line)
