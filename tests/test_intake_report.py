"""The module's month view route: authenticated like the others, scoped to the calling source, French."""

from __future__ import annotations

from datetime import date

import pytest

from receiver.intake.report import COLUMNS
from receiver.report.reconcile import euros, kilos
from tests.conftest import SECOND_PASSWORD, SECOND_USER
from tests.report_support import fill_ledger
from tests.test_intake import basic

URL = "/api/paheko/caisse/v1/report"


@pytest.fixture
def september(ledger):
    days = [date(2025, 9, d) for d in (1, 2, 3)]
    return fill_ledger(ledger, days, 8, unfinished={3: "held"}, source="lab")


def test_month_view_verdict_and_table(client, september):
    response = client.get(f"{URL}?month=2025-09", headers=basic())
    assert response.status_code == 200
    body = response.get_json()
    assert body["source"] == "lab" and body["periode"] == {"debut": "2025-09-01", "fin": "2025-09-30",
                                                           "libelle": "Septembre 2025"}
    assert body["verdict"].startswith("Septembre 2025 : pas encore tout dans Recyclic — ")
    assert body["tout_est_dans_recyclic"] is False and body["ton"] == "check"
    assert (body["mois_precedent"], body["mois_suivant"]) == ("2025-08", "2025-10")
    assert [c["cle"] for c in body["colonnes"]][:2] == ["categorie", "articles"]
    assert all(set(row) >= {c["cle"] for c in body["colonnes"]} for row in body["categories"])
    items = [i for s in september.values() for t in s.tabs for i in t.items]
    total = body["total"]["chiffres"]
    assert total["paheko"]["centimes"] == sum(i.total for i in items)
    assert total["paheko"]["grammes"] == sum(i.qty * (i.weight or 0) for i in items)
    held = sum(i.total for t in september[3].tabs for i in t.items)
    assert total["bloque"]["centimes"] == held and body["total"]["euros_en_attente"] == euros(held)
    for row in body["categories"]:
        c = row["chiffres"]
        assert c["paheko"]["centimes"] == c["recyclic"]["centimes"] + c["ecarte"]["centimes"] \
            + c["bloque"]["centimes"] + c["en_attente"]["centimes"]
        assert row["kg_paheko"] == kilos(c["paheko"]["grammes"])
    assert [s["session"] for s in body["sessions_a_surveiller"]] == [3]
    clothes = next(row for row in body["categories"] if row["categorie"] == "Vêtements")
    assert clothes["categories_recyclic"] == ["00000000-0000-4000-8000-000000000010"]
    assert body["sessions"] == 3


def test_post_body_and_empty_month(client, september):
    body = client.post(URL, json={"month": "2025-10"}, headers=basic()).get_json()
    assert body["verdict"] == "Octobre 2025 : aucune session de caisse dans le registre du récepteur pour cette période."
    assert body["categories"] == [] and body["sessions"] == 0
    january = client.post(URL, json={"month": "2026-01"}, headers=basic()).get_json()
    assert (january["mois_precedent"], january["mois_suivant"]) == ("2025-12", "2026-02")


def test_scoped_to_the_calling_source(client, september):
    body = client.get(f"{URL}?month=2025-09", headers=basic(SECOND_USER, SECOND_PASSWORD)).get_json()
    assert body["source"] == "other" and body["sessions"] == 0 and body["categories"] == []


def test_authenticated_like_the_others(client, september):
    assert client.get(f"{URL}?month=2025-09").status_code == 401
    response = client.get(f"{URL}?month=2025-09", headers=basic("lab", "wrong"))
    assert response.status_code in (401, 403) and "categories" not in response.get_json()


@pytest.mark.parametrize("month", ["2025-13", "septembre", "1999-01", "2025-9-1"])
def test_bad_month_is_400_in_french(client, month):
    response = client.get(f"{URL}?month={month}", headers=basic())
    assert response.status_code == 400 and "AAAA-MM" in response.get_json()["error"]


def test_no_redirect_with_trailing_slash(client):
    response = client.get(f"{URL}/?month=2025-09", headers=basic())
    assert response.status_code == 200


# -- the module's month view (paheko_module/month.html, month_view.html) ----------------------------------


def test_module_month_view_reads_only_what_the_route_answers(client, september):
    """The path is the one pinned in _contract.html, and every field month_view.html prints exists in the
    answer (a renamed key would print nothing in Paheko, silently)."""
    import re

    from tests.test_module_contract import MODULE, _assign, _unquote

    contract = {k: _unquote(v) for k, v in _assign(MODULE / "_contract.html", "contract").items()}
    body = client.get(f"/api/{contract['report_path']}?month=2025-09", headers=basic()).get_json()
    template = (MODULE / "month_view.html").read_text(encoding="utf-8")
    objects = {
        "api_answer": body,
        "row": body["categories"][0],
        "column": body["colonnes"][0],
        "line": body["sessions_a_surveiller"][0],
    }
    used = re.findall(r"\$(api_answer|row|column|line)\.(\w+)", template)
    assert {name for name, _ in used} == set(objects)
    missing = [f"${name}.{key}" for name, key in used if key not in objects[name]]
    assert missing == []
    # the table's cells follow the route's columns, in order
    cells = re.findall(r"\$row\.(\w+)", template)
    assert cells == ["est_total"] + [key for key, _ in COLUMNS]
    assert body["total"]["est_total"] is True and not any(row["est_total"] for row in body["categories"])


def test_module_month_page_never_calls_the_receiver_itself():
    """month.html is drawn for people: the call is made by month_view.html, loaded in the background."""
    from tests.test_module_contract import MODULE

    page = (MODULE / "month.html").read_text(encoding="utf-8")
    assert "{{:api" not in page and "_api.html" not in page and "month_view.html" in page
    view = (MODULE / "month_view.html").read_text(encoding="utf-8")
    assert "admin_header" not in view and 'file="./_api.html"' in view and "$contract.report_path" in view
