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
        'methods = { "Espèces" = "cash", "Chèque" = "check", "CB" = "card", "Monnaie locale" = "cash" }')
    result = invoke("--config", str(path), "mapping", "check", "--source", "lab")
    assert result.exit_code == 0, result.output
    assert "covers every" in result.output


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
    assert '# "Boutique principale" = { site = "SITE-UUID", register = "REGISTER-UUID" }' in result.stdout
    assert m["categories"]["Vêtements"] == ids["Vêtements"] and m["categories"]["Livres"] == ids["Livres"]
    assert m["categories"]["Mobilier"] == ids["Mobilier"] and m["categories"]["Adhésion"] == "membership"
    assert m["methods"]["CB"] == "card"
    assert "# Recyclic's categories" not in result.output
    assert wrong.exit_code == 1 and "cannot read Recyclic's reference data" in wrong.output


@pytest.mark.xfail(strict=True, reason="issue 12: `mapping suggest` drafts a near name (0.85) as an active line")
def test_suggest_leaves_near_names_to_the_operator(paheko_config):
    """Paheko's "Électroménager" has no namesake in a real shop's grid, only "Petit électroménager" (0.82) and
    "Gros électroménager" (0.85): a draft must not pick one silently (the stand-in showed it does)."""
    result = _suggest_from_the_local_recyclic(paheko_config)
    m = tomllib.loads(result.stdout)["sources"]["lab"]["mapping"]
    assert "Électroménager" not in m["categories"]
