"""What the receiver tells the module's page: one state per session in a Paheko admin's words, with what
reached Recyclic and what was left out (issue 9 §5, issue 16).

Observed defects this pins: held reasons telling a Paheko admin to edit TOML; a session shown "transmise" at
114,50 € while Recyclic received 117,50 € with no word about the −3,00 € refund left out; "Connexion réussie :
Connexion réussie : …"; "utilisateur" in the receiver's 403 where the module's form says "Identifiant".
"""

from __future__ import annotations

import pytest

from receiver.intake.status import OPERATOR_WORDS, RECEIVER_ADMIN, admin_words, session_view
from receiver.ledger import State
from receiver.sinks.recyclic.mapping.config import MappingSchema
from receiver.sinks.recyclic.mapping.mapper import map_session
from receiver.sinks.recyclic.mapping.model import dump_mapped
from tests.test_intake import GOOD, basic, post
from tests.test_mapping_mapper import fixture_sessions, held, mapping  # noqa: F401 (fixture)

STATUS = "/api/paheko/caisse/v1/status"


def status_of(client, *ids: int) -> dict:
    response = client.get(f"{STATUS}?sessions={','.join(map(str, ids))}", headers=basic())
    assert response.status_code == 200
    return response.get_json()["sessions"]


def clean(text: str | None) -> bool:
    return text is not None and not OPERATOR_WORDS.search(text)


# -- the admin's words -----------------------------------------------------------------------

def test_every_mapper_hold_reason_reads_without_receiver_configuration(fixture_sessions):
    """The worker joins the mapper's reasons with spaces; the admin sees none of [sources…] / x = "skip"."""
    s1, _s2 = fixture_sessions
    reasons = held(s1, MappingSchema().load({"policies": {"refunds": "hold"}}))  # refunds hold only when asked
    joined = " ".join(reasons)
    assert not clean(joined)  # the operator's text does name configuration: the rewrite must remove it
    words = admin_words(joined)
    assert clean(words), words
    for kept in ("Vêtements", "note 4", "Boutique principale", "Alice (bénévole)", "CB"):
        assert kept in words, kept
    assert "ticket" not in words.lower()  # the caisse says "note"
    assert words.count(RECEIVER_ADMIN) >= 4
    assert "Saisissez-les à la main dans Recyclic" in words


@pytest.mark.parametrize("reason", [
    "Recyclic refuse l'utilisateur « admin » du récepteur (401) : vérifiez username et password dans la section "
    "[sink] de cette source, et que cet utilisateur a le rôle admin dans Recyclic, puis libérez la session.",
    "Le ticket 3 a 2 moyens de paiement : Recyclic 1.3 n'en accepte qu'un par vente. Revoyez la politique "
    "mixed_methods de la correspondance.",
    "Les chiffres de cette session ont changé dans Paheko après sa transmission à Recyclic : vérifiez la session "
    "dans Recyclic, puis libérez-la (paheko-recyclic ledger release).",
    "Relecture dans Paheko impossible pour l'instant : la clé d'API Paheko du récepteur est refusée (vérifiez "
    "api_user / api_password).",
    "La source « lab » n'est plus dans la configuration du récepteur.",
])
def test_sink_and_worker_reasons_are_rewritten_or_dropped(reason):
    words = admin_words(reason)
    assert words is None or clean(words), words


@pytest.mark.parametrize("state", [State.HELD, State.FAILED, State.DEAD])
def test_blocked_states_always_say_who_acts(client, ledger, state):
    post(client, GOOD)
    entry = ledger.get("lab", 2)
    ledger.transition(entry.id, state, reason='écrivez refunds = "skip" dans [sources.lab.mapping.policies]')
    view = status_of(client, 2)["2"]
    assert clean(view["admin_reason"]) and RECEIVER_ADMIN in view["admin_reason"], view
    assert view["tone"] in {"check", "wait", "error"} and view["label"]
    assert view["forwarded"] is None and view["left_out"] is None
    assert "[sources" in view["reason"]  # the operator's words stay for the CLI


def test_states_have_a_tone_and_short_label(client, ledger):
    post(client, GOOD)
    sessions = status_of(client, 2, 3)
    assert (sessions["2"]["tone"], sessions["2"]["label"]) == ("wait", "en cours")
    assert (sessions["3"]["tone"], sessions["3"]["label"]) == ("check", "inconnue du récepteur")
    assert "Renvoyer" in sessions["3"]["admin_reason"]


# -- what reached Recyclic, and what did not -------------------------------------------------

def test_forwarded_session_shows_the_refund_left_out(client, ledger, fixture_sessions):
    """Session 1 of the fixture: the −3,00 € refund of ticket 4 is left out under refunds = "skip"."""
    s1, _s2 = fixture_sessions
    mapped = map_session(s1, mapping())
    post(client, {**GOOD, "session_id": 1, "event_id": "1-1"})
    entry = ledger.get("lab", 1)
    ledger.transition(entry.id, State.MAPPED, mapped=dump_mapped(mapped))
    ledger.transition(entry.id, State.FORWARDED)
    view = status_of(client, 1)["1"]
    assert (view["tone"], view["label"]) == ("ok", "dans Recyclic")
    rec = mapped.reconciliation
    assert view["left_out"]["amount_cents"] == rec.items_cents.skipped == -300
    assert view["forwarded"]["amount_cents"] == rec.items_cents.forwarded
    assert view["forwarded"]["amount_cents"] + view["left_out"]["amount_cents"] == rec.items_cents.paheko
    assert view["left_out"]["weight_grams"] == rec.weight_grams.skipped
    assert view["left_out"]["why"] == ["remboursement"]


def test_forwarded_without_anything_left_out(client, ledger, fixture_sessions):
    s1, _ = fixture_sessions
    everything = mapping()
    post(client, {**GOOD, "session_id": 1, "event_id": "1-1"})
    entry = ledger.get("lab", 1)
    mapped = map_session(s1, everything)
    document = dump_mapped(mapped)
    document["skipped"] = []  # as if nothing had been left out
    document["reconciliation"]["items_cents"]["skipped"] = 0
    ledger.transition(entry.id, State.MAPPED, mapped=document)
    ledger.transition(entry.id, State.FORWARDED)
    view = status_of(client, 1)["1"]
    assert view["left_out"] is None and view["forwarded"]["sales"] == len(mapped.sales)


# -- other answers the module prints as they are ---------------------------------------------

def test_ping_says_success_once(client):
    message = client.post("/api/paheko/caisse/v1/ping", json=["ping"], headers=basic()).get_json()["message"]
    assert message.count("Connexion réussie") == 1 and "source" not in message


def test_refused_credentials_use_the_module_form_words(client):
    answer = post(client, GOOD, basic("nobodyatall", "wrongpassword123")).get_json()["error"]
    assert "identifiant" in answer and "utilisateur" not in answer


def test_duplicate_notification_is_one_sentence(client):
    post(client, GOOD)
    message = post(client, GOOD).get_json()["message"]
    assert message.startswith("Session 2 ") and message.count("Session") == 1


# -- the module's probe of the address -------------------------------------------------------

def test_hello_answers_without_credentials_and_counts_no_failure(client):
    """The module calls hello first with dummy credentials (a refused address then prints those, not the
    password): it must answer 200, reveal nothing, and never feed the authentication throttle."""
    for _ in range(30):
        answer = client.get("/api/paheko/caisse/v1/hello", headers=basic("probe", "probe"))
        assert answer.status_code == 200 and answer.get_json() == {"status": "ok"}
    assert client.get("/api/paheko/caisse/v1/hello").status_code == 200
    assert post(client, GOOD).status_code == 201  # not throttled by the 30 dummy calls
    assert client.get("/api/paheko/caisse/v1/status?sessions=2").status_code == 401  # others still need auth
