"""Targets of the acceptance suite: each scenario runs once against the Recyclic stand-in (started here) and once
against a real Recyclic when the environment names one (see harness.py; skipped otherwise)."""

from __future__ import annotations

import pytest

from receiver.demo import PAHEKO_CATEGORIES
from receiver.dev.paheko import create_paheko_app
from receiver.dev.recyclic import (
    CATEGORIES, DEFAULT_USERS, MACHINE_USER, MAIN_SITE, REPLAY_REGISTER, create_recyclic_app,
)
from receiver.dev.server import LocalServer
from tests.acceptance.harness import Paheko, Run, Target, copy_fixture_db, real_paheko, real_recyclic
from tests.acceptance.proxy import FaultProxy

PAHEKO_KEY = ("acceptance", "acceptance-read-key")


@pytest.fixture(scope="session")
def real_target():
    return real_recyclic()


@pytest.fixture(params=["stand-in", "real"])
def target(request, real_target):
    if request.param == "real":
        if real_target is None:
            pytest.skip("no real Recyclic named by PAHEKO_RECYCLIC_RECYCLIC_* (see tests/acceptance/harness.py)")
        yield real_target
        return
    ids = {c.name: c.id for c in CATEGORIES}
    with LocalServer(create_recyclic_app("v2")) as server:
        yield Target("stand-in", server.url + "/v1", MACHINE_USER.username, MACHINE_USER.password, MACHINE_USER.pin,
                     MAIN_SITE.id, REPLAY_REGISTER.id, DEFAULT_USERS[1].id,
                     {name: ids[ours] for name, ours in PAHEKO_CATEGORIES.items()})


@pytest.fixture
def paheko(tmp_path):
    real = real_paheko()
    if real is not None:
        yield real
        return
    db = copy_fixture_db(tmp_path)
    with LocalServer(create_paheko_app(str(db), {PAHEKO_KEY[0]: (PAHEKO_KEY[1], "read")})) as server:
        yield Paheko(server.url, *PAHEKO_KEY, sessions=[1, 2])


@pytest.fixture
def till_shapes_run(tmp_path, target, proxy):
    """A run over the fixture plus sessions shaped like real tills (Paheko stand-in only)."""
    from receiver.dev.paheko_tills import add_real_till_shapes

    if real_paheko() is not None:
        pytest.skip("real-till shapes are added to the Paheko stand-in's copy only")
    db = copy_fixture_db(tmp_path)
    added = [s.id for s in add_real_till_shapes(db)]
    with LocalServer(create_paheko_app(str(db), {PAHEKO_KEY[0]: (PAHEKO_KEY[1], "read")})) as server:
        yield Run(tmp_path, target, Paheko(server.url, *PAHEKO_KEY, sessions=[1, 2, *added]), proxy.url)


@pytest.fixture
def proxy(target):
    proxy = FaultProxy(target.url)
    with LocalServer(proxy) as server:
        proxy.url = server.url
        yield proxy
    proxy.close()


@pytest.fixture
def run(tmp_path, target, paheko, proxy):
    return Run(tmp_path, target, paheko, proxy.url)
