"""Operator commands over a live local pipeline: poll, worker, status, backfill, ledger retry/release/hold."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from click.testing import CliRunner

from receiver.cli import main
from receiver.ledger import State
from receiver.reread.client import PahekoClient
from receiver.worker import RETRY_SCHEDULE, Worker, retry_delay
from tests.test_pipeline import build


@pytest.fixture
def pipeline(tmp_path):
    p = build(tmp_path)
    p.config_path = tmp_path / "config.toml"
    yield p
    for server in p._servers:
        server.stop()
    p.ledger.close()


def cli(p, *args):
    result = CliRunner().invoke(main, ["--config", str(p.config_path), *args], catch_exceptions=False)
    return result


def test_poll_once_reports_what_it_queued(pipeline):
    first = cli(pipeline, "poll", "--once")
    assert first.exit_code == 0, first.output
    assert "lab: scanned 2 session(s) from id 1 in 1 request(s); new: 1, 2; next pass starts at id 3" in first.output
    second = cli(pipeline, "poll", "--once")
    assert "new: none" in second.output and "from id 3" in second.output


def test_worker_once_then_status(pipeline):
    pipeline.notify(2)
    result = cli(pipeline, "worker", "--once")
    assert result.exit_code == 0 and "Processed 2 entries." in result.output
    status = cli(pipeline, "status")
    assert "Source lab" in status.output
    assert "forwarded 2, pending 0, failed 0, held 0, dead 0" in status.output
    assert "last notification: 2026-" in status.output and "last poll: 2026-" in status.output
    assert pipeline.sales_by_tab() and all(n == 1 for n in pipeline.sales_by_tab().values())


def test_status_lists_held_sessions_with_their_reason(tmp_path):
    p = build(tmp_path, policies='refunds = "hold"')
    try:
        p.config_path = tmp_path / "config.toml"
        p.notify(1)
        cli(p, "worker", "--once")
        status = cli(p, "status")
        assert "held 2" in status.output  # session 1 notified, session 2 found by the poll
        assert "Remboursement" in status.output or "rembours" in status.output.lower()
    finally:
        for server in p._servers:
            server.stop()
        p.ledger.close()


def test_backfill_is_idempotent(pipeline):
    first = cli(pipeline, "backfill", "--source", "lab", "--since", "2026-11-01", "--until", "2026-11-30")
    assert first.exit_code == 0, first.output
    assert "2 closed session(s) in Paheko" in first.output and "forwarded: 2 — sessions 1, 2" in first.output
    before = dict(pipeline.sales_by_tab())
    second = cli(pipeline, "backfill", "--source", "lab", "--since", "2026-11-01")
    assert "already forwarded: 2 — sessions 1, 2" in second.output
    assert dict(pipeline.sales_by_tab()) == before
    outside = cli(pipeline, "backfill", "--source", "lab", "--since", "2026-10-01", "--until", "2026-10-31")
    assert "0 closed session(s)" in outside.output


def test_hold_release_and_retry(pipeline):
    pipeline.notify(1)
    held = cli(pipeline, "ledger", "hold", "lab:1", "--reason", "Vérification en cours.")
    assert "1 entry held." in held.output
    pipeline.run()  # the poller queues session 2; session 1 stays held
    assert pipeline.ledger.get("lab", 1).state == State.HELD
    assert pipeline.ledger.get("lab", 1).reason == "Vérification en cours."
    released = cli(pipeline, "ledger", "release", "lab:1")
    assert "1 entry released." in released.output
    pipeline.run()
    assert pipeline.ledger.get("lab", 1).state == State.FORWARDED
    nothing = cli(pipeline, "ledger", "retry", "--state", "failed")
    assert "0 entries due now." in nothing.output
    refused = cli(pipeline, "ledger", "release", "lab:1")
    assert "skipped entry" in refused.output and "it is forwarded" in refused.output


def test_retry_after_recyclic_outage(pipeline):
    pipeline.notify(2)
    pipeline.recyclic_app.faults.down()
    pipeline.run()
    assert pipeline.ledger.get("lab", 2).state == State.FAILED
    pipeline.recyclic_app.faults.up()
    assert "2 entries due now." in cli(pipeline, "ledger", "retry", "--state", "failed").output
    cli(pipeline, "worker", "--once")
    assert pipeline.ledger.get("lab", 2).state == State.FORWARDED


def test_unknown_session_is_held_with_a_french_reason(pipeline):
    pipeline.ledger.record_notification("lab", 99, {}, origin="replay")
    worker = pipeline.worker()
    entry = worker.process(pipeline.ledger.claim(worker.name))
    worker.close()
    assert entry.state == State.HELD and "n'existe plus dans Paheko" in entry.reason


def test_one_unreachable_source_never_stalls_the_others(pipeline):
    broken = replace(pipeline.config.sources["lab"], name="ghost",
                     paheko=replace(pipeline.config.sources["lab"].paheko, url="http://127.0.0.1:9", connect_timeout=0.2))
    config = replace(pipeline.config, sources={"ghost": broken, **pipeline.config.sources})
    pipeline.ledger.record_notification("ghost", 1, {}, origin="module")
    pipeline.notify(2)
    worker = Worker(config, pipeline.ledger, rng=random.Random(1),
                    client_factory=lambda s: PahekoClient(s.name, s.paheko, retries=0))
    reports = worker.poll_due_sources(force=True)
    worker.run_once()
    worker.close()
    assert [r.source for r in reports] == ["lab"]
    assert pipeline.ledger.get("lab", 2).state == State.FORWARDED
    ghost = pipeline.ledger.get("ghost", 1)
    assert ghost.state == State.FAILED and "Paheko ne répond pas" in ghost.reason


def test_retry_schedule_spans_about_three_days_then_dead(pipeline):
    rng = random.Random(7)
    delays = [retry_delay(n, rng) for n in range(1, len(RETRY_SCHEDULE) + 1)]
    assert delays[0] < 10 and 2.5 * 86400 < sum(delays) < 4 * 86400
    assert retry_delay(len(RETRY_SCHEDULE) + 1, rng) is None
    assert retry_delay(1, rng, retry_after=120) >= 120
    pipeline.notify(2)
    entry = pipeline.ledger.get("lab", 2)
    pipeline.ledger.transition(entry.id, State.FAILED, attempts=len(RETRY_SCHEDULE))
    pipeline.recyclic_app.faults.down()
    worker = pipeline.worker()
    worker.process(pipeline.ledger.claim(worker.name))
    worker.close()
    dead = pipeline.ledger.get("lab", 2)
    assert dead.state == State.DEAD and dead.reason.startswith("Abandonnée après")
