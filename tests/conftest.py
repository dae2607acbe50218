"""Shared fixtures: configurations, a receiver app, and receivers served over real HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest

from receiver.app import create_app
from receiver.config import Config, parse_config
from receiver.dev.server import LocalServer, free_port

FIXTURES = Path(__file__).parent / "fixtures"
WEBHOOK_USER, WEBHOOK_PASSWORD = "u", "p"  # what the lab capture module-request.http carries
SECOND_USER, SECOND_PASSWORD = "other", "Secret0ther"


def config_text(tmp_path: Path, receiver: str = "") -> str:
    """A two-source configuration file; ``lab`` matches the captured module request."""
    return f"""
[receiver]
ledger = "sqlite:///{tmp_path / 'ledger.sqlite'}"
{receiver}

[sources.lab.webhook]
user = "{WEBHOOK_USER}"
password = "{WEBHOOK_PASSWORD}"

[sources.lab.paheko]
url = "http://paheko.invalid"
api_user = "k"
api_password = "PahekoApiSecret42"

[sources.other]
timezone = "America/Montreal"

[sources.other.webhook]
user = "{SECOND_USER}"
password = "{SECOND_PASSWORD}"

[sources.other.paheko]
url = "http://other.invalid"
api_user = "k2"
api_password = "OtherApiSecret42"
"""


def config_document(tmp_path: Path, receiver: str = "") -> dict:
    return tomllib.loads(config_text(tmp_path, receiver))


@pytest.fixture
def config(tmp_path) -> Config:
    return parse_config(config_document(tmp_path), tmp_path / "config.toml")


@pytest.fixture
def app(config):
    app = create_app(config)
    yield app
    app.extensions["paheko_recyclic"].ledger.close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def ledger(app):
    return app.extensions["paheko_recyclic"].ledger


@pytest.fixture
def live_receiver(app):
    """The receiver on 127.0.0.1 through a real (threaded Werkzeug) HTTP server."""
    with LocalServer(app) as server:
        yield server


class ServedReceiver:
    """The receiver in its production server (``paheko-recyclic run``: waitress), as a separate process.

    ``output()`` / ``kill()`` return what it logged (one JSON event per line).
    """

    def __init__(self, config_path: Path, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "receiver", "--config", str(config_path), "run", "--bind", f"127.0.0.1:{self.port}"],
            env={**os.environ, "PAHEKO_RECYCLIC_LOG_LEVEL": "warning", **(env or {})},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
            if self.process.poll() is not None:
                break
        output = self.kill()
        raise RuntimeError(f"the receiver did not start:\n{output}")

    def kill(self, sig: int = signal.SIGKILL) -> str:
        """Signal the process (group) and collect the output."""
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass
        out, _ = self.process.communicate(timeout=20)
        return out.decode(errors="replace")


@pytest.fixture
def served_receiver(tmp_path):
    receivers: list[ServedReceiver] = []

    def start(receiver_settings: str = "", env: dict[str, str] | None = None) -> ServedReceiver:
        path = tmp_path / "config.toml"
        path.write_text(config_text(tmp_path, receiver_settings))
        receiver = ServedReceiver(path, env)
        receivers.append(receiver)
        return receiver

    yield start
    for receiver in receivers:
        receiver.kill()
