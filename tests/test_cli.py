"""The command line: init, check-config, ledger list/show."""

from __future__ import annotations

from click.testing import CliRunner

from receiver.cli import main
from receiver.config import load_config
from tests.conftest import config_text


def invoke(*args, env=None):
    return CliRunner().invoke(main, list(args), env=env or {}, catch_exceptions=False)


def test_init_writes_a_valid_commented_config(tmp_path):
    path = tmp_path / "c.toml"
    result = invoke("init", str(path))
    assert result.exit_code == 0 and path.exists()
    text = path.read_text()
    assert text.count("#") > 20  # commented for a person
    config = load_config(path)
    assert config.sources["lab"].webhook[0].password.reveal().isalnum()
    assert invoke("init", str(path)).exit_code == 1  # never overwrites silently


def test_init_generates_fresh_credentials(tmp_path):
    invoke("init", str(tmp_path / "a.toml"))
    invoke("init", str(tmp_path / "b.toml"))
    a, b = load_config(tmp_path / "a.toml"), load_config(tmp_path / "b.toml")
    assert a.sources["lab"].webhook[0].password != b.sources["lab"].webhook[0].password


def test_check_config_lists_every_problem_and_hides_secrets(tmp_path):
    path = tmp_path / "c.toml"
    text = config_text(tmp_path).replace('timezone = "America/Montreal"', 'timezone = "Mars/Olympus"')
    text = text.replace('user = "u"', 'user = "u-1"').replace('url = "http://other.invalid"', 'url = "ftp://x"')
    path.write_text(text + "\n[worker]\npoll_interval = 0\nmystery = 1\n")
    result = invoke("--config", str(path), "check-config")
    assert result.exit_code == 1
    for needle in ("sources.other.timezone", "sources.lab.webhook.user", "sources.other.paheko.url",
                   "worker.poll_interval", "worker.mystery"):
        assert needle in result.output
    assert ".value" not in result.output and "PahekoApiSecret42" not in result.output


def test_check_config_ok_shows_sources_without_secrets(tmp_path, monkeypatch):
    path = tmp_path / "c.toml"
    monkeypatch.setenv("TEST_SECRET", "FromEnvironment123")
    path.write_text(config_text(tmp_path).replace('api_password = "PahekoApiSecret42"', 'api_password = { env = "TEST_SECRET" }'))
    result = invoke("--config", str(path), "check-config")
    assert result.exit_code == 0, result.output
    assert "source lab" in result.output and "source other" in result.output
    assert "FromEnvironment123" not in result.output and "PahekoApiSecret42" not in result.output


def test_secret_references(tmp_path, monkeypatch):
    secret_file = tmp_path / "secret"
    secret_file.write_text("FromFile99\n")
    path = tmp_path / "c.toml"
    path.write_text(config_text(tmp_path).replace('password = "p"', f'password = {{ file = "{secret_file}" }}')
                    .replace('api_password = "OtherApiSecret42"', 'api_password = { env = "NOT_SET_ANYWHERE" }'))
    result = invoke("--config", str(path), "check-config")
    assert "environment variable NOT_SET_ANYWHERE is not set" in result.output
    path.write_text(config_text(tmp_path).replace('password = "p"', f'password = {{ file = "{secret_file}" }}'))
    assert load_config(path).sources["lab"].webhook[0].password.reveal() == "FromFile99"


def test_duplicate_webhook_users_are_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(config_text(tmp_path).replace('user = "other"', 'user = "u"'))
    result = invoke("--config", str(path), "check-config")
    assert result.exit_code == 1 and "must be unique" in result.output


def test_config_from_environment_variable(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(config_text(tmp_path))
    assert invoke("check-config", env={"PAHEKO_RECYCLIC_CONFIG": str(path)}).exit_code == 0
    assert "no configuration file" in invoke("check-config").output


def test_ledger_list_and_show(tmp_path, client):
    path = tmp_path / "config.toml"
    path.write_text(config_text(tmp_path))
    from tests.test_intake import GOOD, post

    post(client, GOOD)
    listing = invoke("--config", str(path), "ledger", "list")
    assert listing.exit_code == 0
    assert "lab" in listing.output and "notified" in listing.output
    assert "2026-" in listing.output  # local times, readable
    shown = invoke("--config", str(path), "ledger", "show", "lab:2", "--raw")
    assert "Paheko session 2" in shown.output and "∅ → notified" in shown.output and "7290" in shown.output
    missing = invoke("--config", str(path), "ledger", "show", "lab:99")
    assert missing.exit_code == 1 and "no ledger entry" in missing.output


def test_delivery_notes_reach_ledger_show_and_status(tmp_path, client, ledger):
    path = tmp_path / "config.toml"
    path.write_text(config_text(tmp_path))
    from tests.test_intake import GOOD, post

    post(client, GOOD)
    entry = ledger.get("lab", 2)
    ledger.record_forward(entry.id, "session", 2, status="done", sink_id="rec-session-1")
    ledger.add_note(entry.id, "Session Recyclic vide en trop rec-orphan supprimée.")
    shown = invoke("--config", str(path), "ledger", "show", "lab:2").output
    assert "rec-session-1" in shown and "Notes:" in shown and "rec-orphan supprimée" in shown
    status = invoke("--config", str(path), "status").output
    assert "session 2" in status and "rec-orphan supprimée" in status


def test_minimal_config_gets_every_default(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[sources.lab.webhook]\nuser = "m"\npassword = "p"\n'
                    '[sources.lab.paheko]\nurl = "https://p.example.org"\napi_user = "k"\napi_password = "s"\n')
    config = load_config(path)
    assert config.receiver.ledger_url == f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    assert config.worker.poll_interval == 60.0
    assert config.sources["lab"].timezone.key == "Europe/Paris"
