"""End-to-end scenarios, written once, run against the Recyclic stand-in and against a real Recyclic.

The project is driven through its configuration file and the ``paheko-recyclic`` command; what reached
Recyclic is read back through Recyclic's API and compared with Paheko (read through /api/sql), to the cent
and the gram. Faults come from a proxy in front of the target, so they are the same for both.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.acceptance.harness import assert_recyclic_matches_paheko, stop, wait_for

SALES = "POST sales/"
CLOSES = "POST cash-sessions/*/close"


def test_forward_the_fixture_sessions_and_read_every_sale_back(run, proxy):
    run.worker_once()
    figures = assert_recyclic_matches_paheko(run)
    assert run.settled_sessions()["forwarded"] == len(run.paheko.sessions)
    assert figures["recyclic_sessions"] == len(run.paheko.sessions)
    assert proxy.count(CLOSES) == len(run.paheko.sessions)


def test_real_till_shapes_reach_recyclic_to_the_cent_and_gram(till_shapes_run, proxy):
    """A free tab without payment, multi-quantity lines weighed per unit, a deleted tab, a till open for days,
    and Paheko 1.3.21's UTC close time: every whole tab arrives, once, to the cent and the gram."""
    run = till_shapes_run
    run.worker_once()
    assert run.settled_sessions()["forwarded"] == len(run.paheko.sessions), run.ledger("list", "--source", run.source)
    figures = assert_recyclic_matches_paheko(run)
    assert figures["recyclic_sessions"] == len(run.paheko.sessions)


def test_lost_answers_leave_no_duplicate_and_nothing_missing(run, proxy):
    proxy.lose_answer(SALES, 2, 5)  # processed by Recyclic, answer never received
    proxy.lose_answer(CLOSES, 1)
    for _ in range(4):
        run.worker_once()
        if run.settled_sessions()["forwarded"] == len(run.paheko.sessions):
            break
        run.ledger("retry", "--source", run.source)  # make the failed entries due now, as an operator can
    assert run.settled_sessions()["forwarded"] == len(run.paheko.sessions), run.ledger("list", "--source", run.source)
    assert_recyclic_matches_paheko(run)


def test_restart_mid_forward_resumes_without_duplicates(run, proxy):
    worker = run.start_worker()
    killed = []

    def kill() -> None:  # the third sale is stored by Recyclic, its worker dies before the answer
        os.killpg(worker.pid, signal.SIGKILL)
        killed.append(True)

    proxy.on_hit(SALES, 3, kill)
    try:
        wait_for(lambda: killed and worker.poll() is not None, 60, "the worker to be killed mid-forward")
    finally:
        stop(worker)
    deadline = time.monotonic() + 60  # the dead worker's claim lasts one lease ([worker] lease, 15 s) at most
    while time.monotonic() < deadline:
        run.worker_once()
        if run.settled_sessions()["forwarded"] == len(run.paheko.sessions):
            break
        time.sleep(1)
    assert run.settled_sessions()["forwarded"] == len(run.paheko.sessions), run.ledger("list", "--source", run.source)
    assert_recyclic_matches_paheko(run)


def test_a_wrong_pin_is_tried_once_then_held_until_a_person_fixes_it(run, proxy):
    right = run.target.pin
    run.write_config(f"{(int(right) + 1) % 10000:04d}")
    run.worker_once()
    assert proxy.count(CLOSES) == 1  # the refused PIN is not sent again, not even for the other session
    states = run.settled_sessions()
    assert states["held"] == len(run.paheko.sessions), run.ledger("list", "--source", run.source)
    assert "PIN" in run.ledger("list", "--source", run.source, "--state", "held")
    run.worker_once()
    assert proxy.count(CLOSES) == 1
    assert_recyclic_matches_paheko(run, closed=False)  # the sales are there once, the sessions still open
    run.write_config(right)
    run.ledger("release", "--source", run.source)
    run.worker_once()
    assert proxy.count(CLOSES) == 1 + len(run.paheko.sessions)
    assert run.settled_sessions()["forwarded"] == len(run.paheko.sessions)
    assert_recyclic_matches_paheko(run)
