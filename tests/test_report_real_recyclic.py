"""``report --verify`` against a real Recyclic v2 (address and credentials from the environment, as the lab's
``env.sh`` exports them; skipped without). The fixture's two sessions are forwarded by the real worker from the
local Paheko to that Recyclic under a source name of their own (so notes and idempotency keys never meet an
earlier run's), then read back: the report and Recyclic must agree to the cent and the gram. Two logins.
Cleanup: the Paheko outbox items of the closes are rejected (Paheko's caisse is the booking)."""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from functools import partial
from dataclasses import replace
from datetime import date

import pytest

from receiver.app import create_app
from receiver.config import load_config
from receiver.dev.paheko import create_paheko_app
from receiver.dev.server import LocalServer
from receiver.ledger import State
from receiver.report.ledger import load_sessions
from receiver.report.reconcile import reconcile
from receiver.report.verify import Verification, sweep, verify
from receiver.sinks.recyclic.sink import list_sessions
from receiver.services import EXTENSION
from receiver.worker import Worker
from tests.conftest import FIXTURES
from tests.test_pipeline import PAHEKO_KEY

ENV = "PAHEKO_RECYCLIC_RECYCLIC_"
NEEDED = ("URL", "USER", "PASSWORD", "PIN", "SITE", "REGISTER", "OPERATOR", "CATEGORIES")
pytestmark = pytest.mark.skipif(any(not os.environ.get(ENV + n) for n in NEEDED),
                                reason="no real Recyclic configured (source /work/lab/recyclic/env.sh)")
NOVEMBER = (date(2026, 11, 1), date(2026, 11, 30))


def config_text(tmp_path, paheko_url: str, source: str) -> str:
    env = {n: os.environ[ENV + n] for n in NEEDED}
    ids = json.loads(env["CATEGORIES"])
    categories = "\n".join(f'"{name}" = "{ids[name]}"' for name in ("Vêtements", "Livres", "Mobilier"))
    return f"""
[receiver]
ledger = "sqlite:///{tmp_path / 'ledger.sqlite'}"

[sources.{source}.webhook]
user = "m{source}"
password = "RealRecyclicReport42"

[sources.{source}.paheko]
url = "{paheko_url}"
api_user = "{PAHEKO_KEY[0]}"
api_password = "{PAHEKO_KEY[1]}"

[sources.{source}.mapping]
close_session = true
default_operator = "{env['OPERATOR']}"

[sources.{source}.mapping.locations."Boutique principale"]
site = "{env['SITE']}"
register = "{env['REGISTER']}"

[sources.{source}.mapping.categories]
{categories}
"Électroménager" = "{ids['Petit électroménager']}"

[sources.{source}.mapping.methods]
"Espèces" = "cash"
"Chèque" = "check"
"CB" = "card"
"Monnaie locale" = "transfer"

[sources.{source}.mapping.policies]
refunds = "skip"

[sources.{source}.sink]
type = "recyclic"
profile = "v2"
url = "{env['URL']}"
username = "{env['USER']}"
password = "{env['PASSWORD']}"
pin = "{env['PIN']}"
"""


def test_verify_reads_back_what_was_forwarded(tmp_path):
    from receiver.sinks.recyclic.client import RecyclicClient

    db = tmp_path / "paheko.sqlite"
    shutil.copy(FIXTURES / "paheko-caisse.sqlite", db)
    paheko = LocalServer(create_paheko_app(str(db), {PAHEKO_KEY[0]: (PAHEKO_KEY[1], "read")})).start()
    source = f"rpt{int(time.time())}{random.randint(0, 99)}"
    path = tmp_path / "config.toml"
    path.write_text(config_text(tmp_path, paheko.url, source), encoding="utf-8")
    config = load_config(path)
    app = create_app(config)
    ledger = app.extensions[EXTENSION].ledger
    client = RecyclicClient(config.sources[source].sink)
    closed: list[str] = []
    try:
        worker = Worker(config, ledger, rng=random.Random(1))
        try:
            worker.poll_due_sources(force=True)
            worker.run_once()
        finally:
            worker.close()
        entries = ledger.list(source=source)
        assert {e.state for e in entries} == {State.FORWARDED}, [(e.session_id, e.state, e.reason) for e in entries]
        closed = [ledger.forwards_of(e.id)[("close", e.session_id)].sink_id for e in entries]
        sessions = load_sessions(ledger, source, *NOVEMBER)
        report = reconcile(source, sessions, *NOVEMBER)
        assert report.complete and report.verdict.startswith("Novembre 2026 : tout est dans Recyclic, sauf ")
        started = time.perf_counter()
        result = verify(sessions, client.get)
        elapsed = time.perf_counter() - started
        print(f"verify: {result.sessions} sessions, {result.sales} sales, {result.requests} requests, "
              f"{elapsed:.2f} s, findings {result.findings}")
        sent = sum(1 for e in entries for (kind, _), f in ledger.forwards_of(e.id).items()
                   if kind == "sale" and f.status == "done")
        assert result.findings == [] and result.sessions == 2 and result.sales == sent >= 8
        # the sweep lists the period's sessions at the site: none but ours holds this source's tickets
        swept = Verification()
        sweep(sessions, source, *NOVEMBER, config.sources[source].timezone, partial(list_sessions, client),
              client.get, swept)
        print(f"sweep: {swept.requests} request(s), findings {swept.findings}")
        assert swept.findings == []
        # a ledger that says one more gram was sent than Recyclic holds: exactly that finding
        first = sessions[0]
        doc = json.loads(json.dumps(first.mapped))
        doc["sales"][0]["items"][0]["weight_grams"] += 1
        tampered = verify([replace(first, mapped=doc)], client.get).findings
        assert len(tampered) == 1 and "kg dans Recyclic" in tampered[0], tampered
        # Recyclic's own totals (floats) agree with the report's integers
        remote = [client.get(f"cash-sessions/{sid}") for sid in closed]
        assert round(sum(s["total_weight_out"] for s in remote) * 1000) == report.total.forwarded.grams
        assert round(sum(s["total_sales"] for s in remote) * 100) == report.total.forwarded.cents
    finally:
        for session_id in closed:
            for item in client.get(f"admin/paheko-outbox/items?cash_session_id={session_id}").get("data", []):
                if item.get("outbox_status") == "pending":
                    client.post(f"admin/paheko-outbox/items/{item['id']}/reject",
                                {"reason": "Test paheko-recyclic : la caisse Paheko a déjà comptabilisé cette "
                                           "session (pas de double écriture)."})
        client.close()
        ledger.close()
        paheko.stop()
