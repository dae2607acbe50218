"""The [sources.NAME.mapping] table in the configuration, and `mapping suggest|check` against the stand-in."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from receiver.cli import main
from receiver.config import ConfigError, parse_config
from receiver.dev.paheko import create_paheko_app
from receiver.dev.server import LocalServer
from receiver.sinks.recyclic.mapping.config import Mapping, MappingSchema, Policies
from receiver.sinks.recyclic.mapping.suggest import RecyclicNames, render_suggestion, unmapped
from tests.conftest import config_text
from tests.paheko_db import CASH, DEBT, PahekoDB

FIXTURE = Path(__file__).parent / "fixtures" / "paheko-caisse.sqlite"
SITE = "0b6c1d52-8e0a-4c59-9c1c-2f2b7f7b1a01"
REGISTER = "0b6c1d52-8e0a-4c59-9c1c-2f2b7f7b1a02"
USER = "0b6c1d52-8e0a-4c59-9c1c-2f2b7f7b1a03"
CLOTHES = "0b6c1d52-8e0a-4c59-9c1c-2f2b7f7b1a04"


def test_config_without_mapping_gets_the_empty_mapping(tmp_path):
    config = parse_config(tomllib.loads(config_text(tmp_path)))
    assert config.sources["lab"].mapping == Mapping()
    assert Mapping().policies == Policies()
    # What Recyclic cannot represent is left out by default; configuration gaps hold.
    assert (Policies().refunds, Policies().debt_wallet, Policies().membership) == ("skip", "skip", "skip")
    assert (Policies().unknown_category, Policies().unknown_method, Policies().unknown_location) == ("hold",) * 3
    assert Mapping().close_session is True


def test_config_with_a_mapping(tmp_path):
    text = config_text(tmp_path) + f"""
[sources.lab.mapping]
profile = "legacy"
default_operator = "{USER.upper()}"
locations = {{ "Boutique principale" = {{ site = "{SITE}", register = "{REGISTER}" }} }}
no_location = {{ site = "{SITE}" }}
categories = {{ "Vêtements" = "{CLOTHES}", "Adhésion" = "membership" }}
methods = {{ "Espèces" = "Cash", "CB" = "card" }}
policies = {{ refunds = "hold" }}
"""
    m = parse_config(tomllib.loads(text)).sources["lab"].mapping
    assert m.profile == "legacy" and m.close_session is True  # legacy closes by default
    assert m.default_operator == USER  # canonical lower case
    assert m.locations["Boutique principale"].register_id == REGISTER and m.no_location.register_id is None
    assert m.categories == {"Vêtements": CLOTHES, "Adhésion": "membership"}
    assert m.methods == {"Espèces": "cash", "CB": "card"}
    assert m.policies.refunds == "hold" and m.policies.debt_wallet == "skip"
    assert MappingSchema().load({}).close_session is True  # sessions are closed by default
    assert MappingSchema().load({}).allow_live is False
    assert MappingSchema().load({"profile": "legacy", "close_session": False}).close_session is False


@pytest.mark.parametrize("table, problem", [
    ('default_operator = "alice"', "not a UUID"),
    ('categories = { "Livres" = "Books" }', "not a UUID"),
    ('profile = "legacy"\nmethods = { "Virement" = "transfer" }', "legacy profile"),
    ('methods = { "CB" = "carte bancaire" }', "payment codes"),
    ('policies = { refunds = "drop" }', "Must be one of"),
    ('mistake = 1', "Unknown field"),
    ('locations = { "Boutique" = { register = "' + REGISTER + '" } }', "site"),
])
def test_config_mapping_errors(tmp_path, table, problem):
    text = config_text(tmp_path) + f"\n[sources.lab.mapping]\n{table}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(text))
    assert any(line.startswith("sources.lab.mapping.") and problem in line for line in info.value.problems), info.value.problems


@pytest.fixture
def paheko_config(tmp_path):
    """A configuration whose source `lab` reads the fixture through the stand-in; yields a writer of its
    mapping table and the config path."""
    with LocalServer(create_paheko_app(FIXTURE)) as server:
        def write(mapping: str = "") -> Path:
            text = config_text(tmp_path).replace("http://paheko.invalid", server.url)
            text = text.replace('api_user = "k"', 'api_user = "demo"').replace('"PahekoApiSecret42"', '"demo"')
            path = tmp_path / "config.toml"
            path.write_text(text + (f"\n[sources.lab.mapping]\n{mapping}\n" if mapping else ""))
            return path
        yield write


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_check_lists_what_is_unmapped(paheko_config):
    result = invoke("--config", str(paheko_config()), "mapping", "check", "--source", "lab")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert "unmapped: location 'Boutique principale': no Recyclic site in [locations]" in lines
    assert "unmapped: operator 'Alice (bénévole)': no Recyclic user in [operators] and no default_operator" in lines
    assert "unmapped: payment method 'CB': no Recyclic code in [methods]" in lines
    assert not any("Ardoise" in line for line in lines)  # debt follows its policy, not a code
    categories = [line for line in lines if "category" in line]
    # Current categories and the names on sold lines ("Adhésion" has no sale here, so it must be mapped too).
    for name in ("Vêtements", "Livres", "Mobilier", "Électroménager", "Adhésion", "Pièces de vélo neuves (exemple)"):
        assert any(f"'{name}'" in line for line in categories), name


def test_check_passes_once_everything_is_mapped(paheko_config):
    categories = ", ".join(f'"{n}" = "{CLOTHES}"' for n in (
        "Vêtements", "Livres", "Mobilier", "Électroménager", "Adhésion", "Pièces de vélo neuves (exemple)"))
    path = paheko_config(
        f'default_operator = "{USER}"\nlocations = {{ "Boutique principale" = {{ site = "{SITE}" }} }}\n'
        f"categories = {{ {categories} }}\n"
        'methods = { "Espèces" = "cash", "Chèque" = "check", "CB" = "card", "Monnaie locale" = "monnaie_locale" }')
    result = invoke("--config", str(path), "mapping", "check", "--source", "lab")
    assert result.exit_code == 0, result.output
    assert "covers every" in result.output and "warning(s) above" in result.output
    assert "warning: this source's sink is not Recyclic" in result.output
    # An unmapped name under a "skip" policy is a decision, not a problem.
    path.write_text(path.read_text().replace(', "Monnaie locale" = "monnaie_locale"', "")
                    + '\n[sources.lab.mapping.policies]\nunknown_method = "skip"\n')
    result = invoke("--config", str(path), "mapping", "check", "--source", "lab")
    assert result.exit_code == 0, result.output
    assert ("warning: unmapped: payment method 'Monnaie locale': no Recyclic code in [methods] — left out and "
            'recorded (policies.unknown_method = "skip")') in result.output
    assert "the unmapped names above are left out by policy" in result.output
    path.write_text(path.read_text().replace('"CB" = "card" }', '"CB" = "card", "Monnaie locale" = "monnaie_locale" }'))
    # Local currency mapped to euro cash: a problem, not a pass.
    path.write_text(path.read_text().replace('"monnaie_locale"', '"cash"'))
    result = invoke("--config", str(path), "mapping", "check", "--source", "lab")
    assert result.exit_code == 1
    assert "problem: payment method 'Monnaie locale' is mapped to cash, Recyclic's euro cash" in result.output


def test_suggest_paheko_side(paheko_config):
    path = paheko_config(f'categories = {{ "Vêtements" = "{CLOTHES}" }}')
    result = invoke("--config", str(path), "mapping", "suggest", "--source", "lab")
    assert result.exit_code == 0, result.output
    text = result.stdout
    document = tomllib.loads(text)  # valid TOML as printed
    m = document["sources"]["lab"]["mapping"]
    assert m["categories"] == {"Vêtements": CLOTHES, "Adhésion": "membership"}  # kept; membership by name
    # "Monnaie locale" (cash-type, account 5300) is not euro cash: never drafted as cash.
    assert m["methods"] == {"Espèces": "cash", "Chèque": "check", "CB": "card"}
    assert '# "Monnaie locale": not euro cash' in text
    assert m["policies"]["refunds"] == "skip" and "profile" not in m and m["close_session"] is True
    assert 'profile = "v2" in [sources.lab.sink]' in text  # the Recyclic line is the sink's setting
    assert '# "Boutique principale" = { site = "SITE-UUID"' in text
    assert '# "Alice (bénévole)" = "USER-UUID"' in text and '# "Livres" = "CATEGORY-UUID"' in text
    assert '# "Ardoise": Ardoise / porte-monnaie' in text
    # What it prints loads as this source's mapping once pasted.
    assert isinstance(MappingSchema().load(m), Mapping)
    incomplete = CliRunner().invoke(main, ["--config", str(path), "mapping", "suggest", "--source", "lab",
                                           "--recyclic-url", "http://x"], env={"RECYCLIC_PASSWORD": ""})
    assert incomplete.exit_code == 2 and "go together" in incomplete.output
    assert invoke("--config", str(path), "mapping", "check", "--source", "nope").exit_code == 1


def test_suggest_matches_recyclic_names(tmp_path):
    path = tmp_path / "p.sqlite"
    with PahekoDB(path) as db:
        db.location("Boutique")
        db.method("Espèces", CASH, "530")
        db.method("Ardoise", DEBT, "411")
        db.category("Vetements adultes", "7071")
        db.category("Bibelots", "7072")
    with LocalServer(create_paheko_app(path)) as server:
        from receiver.config import PahekoApi, Secret
        from receiver.sinks.recyclic.mapping.suggest import read_paheko_names
        from receiver.reread.client import PahekoClient

        with PahekoClient("lab", PahekoApi(server.url, "demo", Secret("demo"))) as client:
            names = read_paheko_names(client)
    assert names.locations == ("Boutique",) and names.sessions_without_location == 0
    recyclic = RecyclicNames(
        categories=(("c1", "Vêtements adulte"), ("c2", "Livres")),
        sites=(("s1", "La Boutique"), ("s2", "Entrepôt")),
        registers=(("r1", "Caisse 1", "s1"), ("r2", "Caisse A", "s2")),
        payment_codes=("cash", "card", "check", "transfer"),
    )
    text = render_suggestion("lab", names, Mapping(), recyclic)
    # Two sites, none named exactly "Boutique": nothing active, both offered.
    assert '# "Boutique": several Recyclic sites; choose one: "La Boutique" = "s1", "Entrepôt" = "s2"' in text
    assert '# "Boutique" = { site = "SITE-UUID" }' in text
    assert '"Vetements adultes" = "c1"  # same name as "Vêtements adulte"' in text
    assert '# "Bibelots" = "CATEGORY-UUID"' in text
    assert unmapped(names, Mapping()) == [
        "location 'Boutique': no Recyclic site in [locations]",
        "category 'Bibelots': no Recyclic category in [categories]",
        "category 'Vetements adultes': no Recyclic category in [categories]",
        "payment method 'Espèces': no Recyclic code in [methods]",
    ]


def _suggest_from_the_local_recyclic(paheko_config, password: str | None = None):
    from receiver.dev.recyclic import MACHINE_USER, create_recyclic_app

    path = paheko_config()
    with LocalServer(create_recyclic_app("v2")) as recyclic:
        return invoke("--config", str(path), "mapping", "suggest", "--source", "lab",
                      "--recyclic-url", recyclic.url + "/v1", "--recyclic-user", MACHINE_USER.username,
                      "--recyclic-password", password or MACHINE_USER.password)


def test_suggest_with_the_local_recyclic(paheko_config):
    from receiver.dev.recyclic_store import CATEGORIES

    result = _suggest_from_the_local_recyclic(paheko_config)
    wrong = _suggest_from_the_local_recyclic(paheko_config, "wrong")
    assert result.exit_code == 0, result.output
    m = tomllib.loads(result.stdout)["sources"]["lab"]["mapping"]
    ids = {c.name: c.id for c in CATEGORIES}
    # The stand-in's shop has two sites: nothing matches "Boutique principale", the operator chooses.
    assert m["locations"] == {}
    assert '# "Boutique principale": several Recyclic sites; choose one:' in result.stdout
    assert '# "Boutique principale" = { site = "SITE-UUID" }' in result.stdout
    assert m["categories"]["Vêtements"] == ids["Vêtements"] and m["categories"]["Livres"] == ids["Livres"]
    assert m["categories"]["Mobilier"] == ids["Mobilier"] and m["categories"]["Adhésion"] == "membership"
    assert m["methods"]["CB"] == "card"
    assert "# Recyclic's categories" not in result.output
    assert wrong.exit_code == 1 and "cannot read Recyclic's reference data" in wrong.output


def test_suggest_leaves_near_names_to_the_operator(paheko_config):
    """Paheko's "Électroménager" has no namesake in a real shop's grid, only "Petit électroménager" (0.82) and
    "Gros électroménager" (0.85): a draft must not pick one silently (the stand-in showed it does)."""
    result = _suggest_from_the_local_recyclic(paheko_config)
    m = tomllib.loads(result.stdout)["sources"]["lab"]["mapping"]
    assert "Électroménager" not in m["categories"]


def full_mapping(**extra: str) -> str:
    from receiver.dev.recyclic_store import CATEGORIES, MAIN_SITE, REPLAY_REGISTER

    ids = {c.name: c.id for c in CATEGORIES}
    lines = [f'default_operator = "{extra.pop("operator", USER)}"',
             f'locations = {{ "Boutique principale" = {{ site = "{MAIN_SITE.id}", '
             f'register = "{extra.pop("register", REPLAY_REGISTER.id)}" }} }}',
             f'categories = {{ "Vêtements" = "{ids["Vêtements"]}", "Livres" = "{ids["Livres"]}", '
             f'"Mobilier" = "{ids["Mobilier"]}", "Électroménager" = "{ids["Petit électroménager"]}", '
             f'"Adhésion" = "membership", "Pièces de vélo neuves (exemple)" = "{ids["Pièces détachées vélo"]}" }}',
             'methods = { "Espèces" = "cash", "Chèque" = "check", "CB" = "card", "Monnaie locale" = "transfer" }']
    return "\n".join(lines + [f"{k} = {v}" for k, v in extra.items()])


def with_recyclic_sink(path: Path, url: str, pin: str | None = "1234") -> Path:
    from receiver.dev.recyclic import MACHINE_USER

    text = path.read_text()
    sink = (f'\n[sources.lab.sink]\ntype = "recyclic"\nurl = "{url}/v1"\nusername = "{MACHINE_USER.username}"\n'
            f'password = "{MACHINE_USER.password}"\n' + (f'pin = "{pin}"\n' if pin else ""))
    path.write_text(text + sink)
    return path


def test_check_against_recyclic_live_use_and_closing(paheko_config):
    """A register or operator in live use is refused (allow_live accepts it, with a warning); closing needs
    the PIN and Recyclic's Paheko close mapping for the site; the outbox is always mentioned. The stand-in's
    shop has its till in live use: Marie's session is open on « Caisse 1 »."""
    import httpx

    from receiver.dev.recyclic import DEFAULT_USERS, MACHINE_USER, create_recyclic_app
    from receiver.dev.recyclic_store import CATEGORIES, LIVE_REGISTER, MAIN_SITE, REPLAY_REGISTER, SHOP_USERS

    replay_operator, cashier = DEFAULT_USERS[1].id, SHOP_USERS[0].id
    with LocalServer(create_recyclic_app("v2")) as recyclic:
        good = with_recyclic_sink(paheko_config(full_mapping(operator=replay_operator)), recyclic.url)
        result = invoke("--config", str(good), "mapping", "check", "--source", "lab")
        assert result.exit_code == 0, result.output
        assert "warning: each close queues an accounting item in Recyclic's Paheko outbox" in result.output
        assert "problem" not in result.output

        on_live = with_recyclic_sink(paheko_config(full_mapping(operator=replay_operator, register=LIVE_REGISTER.id)),
                                     recyclic.url)
        result = invoke("--config", str(on_live), "mapping", "check", "--source", "lab")
        assert result.exit_code == 1
        assert "problem: location 'Boutique principale': register 'Caisse 1' is in live use" in result.output
        assert "marie.caissiere" in result.output and "refused" in result.output
        accepted = with_recyclic_sink(paheko_config(full_mapping(operator=replay_operator, register=LIVE_REGISTER.id,
                                                                 allow_live="true")), recyclic.url)
        result = invoke("--config", str(accepted), "mapping", "check", "--source", "lab")
        assert result.exit_code == 0 and "warning: location 'Boutique principale': register 'Caisse 1' is in live " \
                                         "use" in result.output and "accepted (allow_live = true)" in result.output

        cashier_as_operator = with_recyclic_sink(paheko_config(full_mapping(operator=cashier)), recyclic.url)
        result = invoke("--config", str(cashier_as_operator), "mapping", "check", "--source", "lab")
        assert result.exit_code == 1
        assert (f"problem: operator {cashier} (marie.caissiere) has 1 open session(s) not made by the receiver "
                "(Caisse 1)") in result.output
        # The cashier as operator on the cashier's own register: both refused (a replay would lock that till).
        both = with_recyclic_sink(paheko_config(full_mapping(operator=cashier, register=LIVE_REGISTER.id)),
                                  recyclic.url)
        result = invoke("--config", str(both), "mapping", "check", "--source", "lab")
        assert result.exit_code == 1 and result.output.count("problem: ") == 2, result.output
        # A session the receiver opened (its sales carry Paheko notes) is not live use.
        token = httpx.post(f"{recyclic.url}/v1/auth/login", json={
            "username": MACHINE_USER.username, "password": MACHINE_USER.password}).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        replayed = httpx.post(f"{recyclic.url}/v1/cash-sessions/", headers=headers, json={
            "operator_id": replay_operator, "site_id": MAIN_SITE.id, "register_id": REPLAY_REGISTER.id,
            "initial_amount": 0, "opened_at": "2026-11-24T01:18:21+01:00"}).json()["id"]
        sale = httpx.post(f"{recyclic.url}/v1/sales/", headers=headers, json={
            "cash_session_id": replayed, "total_amount": 1.0, "note": "Paheko lab session 1 ticket 1",
            "payments": [{"payment_method": "cash", "amount": 1.0}],
            "items": [{"category": CATEGORIES[0].id, "quantity": 1, "weight": 0.2, "unit_price": 1.0,
                       "total_price": 1.0}]})
        assert sale.status_code == 200, sale.text
        good = with_recyclic_sink(paheko_config(full_mapping(operator=replay_operator)), recyclic.url)
        result = invoke("--config", str(good), "mapping", "check", "--source", "lab")
        assert result.exit_code == 0 and "problem" not in result.output, result.output

        no_pin = with_recyclic_sink(paheko_config(full_mapping(operator=replay_operator)), recyclic.url, pin=None)
        result = invoke("--config", str(no_pin), "mapping", "check", "--source", "lab")
        assert result.exit_code == 1 and "step-up PIN" in result.output

        off = with_recyclic_sink(paheko_config(full_mapping(operator=replay_operator, close_session="false")),
                                 recyclic.url)
        result = invoke("--config", str(off), "mapping", "check", "--source", "lab")
        assert result.exit_code == 0 and "close_session = false: every forwarded session stays OPEN" in result.output
        assert "outbox" not in result.output

    with LocalServer(create_recyclic_app("v2", paheko_close_mappings=[])) as recyclic:
        path = with_recyclic_sink(paheko_config(full_mapping(operator=replay_operator)), recyclic.url)
        result = invoke("--config", str(path), "mapping", "check", "--source", "lab")
        assert result.exit_code == 1
        assert "has no Paheko close mapping in Recyclic" in result.output
        assert f'POST /v1/admin/paheko-mappings/cash-session-close {{"site_id": "{MAIN_SITE.id}"' in result.output


def test_check_dry_run_replays_paheko_sessions(paheko_config):
    path = paheko_config(full_mapping())
    result = invoke("--config", str(path), "mapping", "check", "--source", "lab", "--dry-run", "--offline")
    out = result.output
    assert result.exit_code == 0, out
    assert "Dry run over 2 closed session(s) of source 'lab' (nothing sent):" in out
    assert "session 1 (2026-11-24 01:18, 5 tickets): forwarded 4 sale(s), 127,50 €, 70850 g, then closed" in out
    assert "session 2 (2026-11-24 01:18, 5 tickets): forwarded 5 sale(s), 75,90 €, 26450 g, then closed" in out
    assert "ticket 9 payment 11 (Chèque): -3,00 €, 0 g" in out
    assert "  lines:  Paheko 197,40 € = forwarded 203,40 € + left out -6,00 € + held 0,00 €" in out
    assert "  Chèque: Paheko 89,00 € = forwarded 92,00 € + left out -3,00 € + held 0,00 €" in out
    assert "total: 2 session(s): 2 would be forwarded (9 sales), 0 held" in out
    # A held session says why, and the check fails.
    held = paheko_config(full_mapping(policies='{ refunds = "hold" }'))
    result = invoke("--config", str(held), "mapping", "check", "--source", "lab", "--dry-run", "--last", "1")
    assert result.exit_code == 1
    assert "Dry run over 1 closed session(s)" in result.output
    assert "session 2 (2026-11-24 01:18, 5 tickets): HELD, 72,90 € and 26450 g wait:" in result.output
    assert "Remboursements, que Recyclic ne peut pas recevoir (ticket 9" in result.output
    assert "warning: policies refunds = \"hold\"" in result.output


def test_check_config_prints_the_mappings_own_findings(paheko_config):
    """check-config (no network): closing without a PIN is a problem; closing off says what it blocks; the
    outbox is mentioned whenever v2 sessions are closed."""
    path = with_recyclic_sink(paheko_config(full_mapping()), "https://recyclic.ressourcerie.test", pin=None)
    result = invoke("--config", str(path), "check-config")
    assert result.exit_code == 1
    assert "problem: close_session = true needs the Recyclic user's 4-digit step-up PIN" in result.output
    assert "warning: each close queues an accounting item in Recyclic's Paheko outbox" in result.output
    path = with_recyclic_sink(paheko_config(full_mapping(close_session="false")), "https://recyclic.ressourcerie.test",
                              pin=None)
    result = invoke("--config", str(path), "check-config")
    assert result.exit_code == 0, result.output
    assert "warning: close_session = false: every forwarded session stays OPEN in Recyclic" in result.output
    assert "outbox" not in result.output
