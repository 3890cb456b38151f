"""The study list: each persona sees exactly the studies the access policy allows."""

from __future__ import annotations

import pytest
from django.test import Client

from audit.models import AuditEvent
from imaging.ingest import ingest
from imaging.models import Patient

STUDIES = "/imaging/"


def _ingest_all(paths) -> None:
    for path in paths:
        with open(path, "rb") as fp:
            assert ingest(fp, source="test").accepted


@pytest.fixture
def archive(ct_study, other_study, paula, charlie) -> None:
    """paula's CT and charlie's MR in the archive, each linked to its patient's account."""
    _ingest_all(ct_study[1])
    _ingest_all(other_study[1])
    Patient.objects.filter(patient_id="PAULA-001").update(user=paula)
    Patient.objects.filter(patient_id="CHARLIE-002").update(user=charlie)


def _page(client: Client, user, **params) -> str:
    client.force_login(user)
    response = client.get(STUDIES, params)
    assert response.status_code == 200
    return response.content.decode()


def test_the_admin_sees_every_study(client, alice, archive):
    html = _page(client, alice)
    assert "CT tórax" in html and "RM crânio" in html
    assert "PAULA-001" in html and "CHARLIE-002" in html


def test_paula_sees_only_the_studies_of_records_linked_to_her(client, paula, archive):
    html = _page(client, paula)
    assert "CT tórax" in html
    assert "RM crânio" not in html and "CHARLIE-002" not in html


def test_charlie_sees_none_of_paulas_studies(client, charlie, archive):
    html = _page(client, charlie)
    assert "RM crânio" in html
    assert "CT tórax" not in html and "PAULA-001" not in html and "Pereira" not in html


def test_charlie_searching_for_paula_finds_nothing(client, charlie, archive):
    for query in ("Pereira", "PAULA-001", "ACC-PAULA-1"):
        html = _page(client, charlie, q=query)
        assert "CT tórax" not in html
        assert "Nenhum exame encontrado." in html


def test_a_patient_whose_records_are_not_linked_sees_nothing(client, paula, ct_study):
    _ingest_all(ct_study[1])  # paula's CT, but no Patient row points at her account yet
    html = _page(client, paula)
    assert "CT tórax" not in html
    assert "Nenhum exame encontrado." in html


def test_a_doctor_without_a_grant_sees_nothing(client, dora, archive):
    html = _page(client, dora)
    assert "CT tórax" not in html and "RM crânio" not in html


@pytest.mark.parametrize(
    ("query", "found", "not_found"),
    [
        ("pereira", "CT tórax", "RM crânio"),  # part of the name, any case
        ("CHARLIE-002", "RM crânio", "CT tórax"),  # patient ID
        ("ACC-PAULA-1", "CT tórax", "RM crânio"),  # accession number
    ],
)
def test_search_by_name_patient_id_or_accession(client, alice, archive, query, found,
                                               not_found):
    html = _page(client, alice, q=query)
    assert found in html
    assert not_found not in html
    assert f'value="{query}"' in html


def test_the_search_box_escapes_what_was_typed(client, alice, archive):
    html = _page(client, alice, q='"><script>alert(1)</script>')
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;" in html


def test_each_study_shows_its_counts(client, alice, archive):
    html = _page(client, alice, q="ACC-PAULA-1")
    assert "<td>2</td><td>12</td>" in html  # 2 series, 12 images


def test_listing_studies_is_on_the_audit_trail_once_per_patient_shown(client, paula,
                                                                       archive):
    _page(client, paula)
    [entry] = AuditEvent.objects.filter(action="search")
    assert entry.username == "paula"
    assert entry.patient_ref and entry.detail["hits"] == 1


def test_technicians_have_no_archive_to_browse_and_go_to_the_upload_page(client, tina):
    client.force_login(tina)
    response = client.get(STUDIES)
    assert response.status_code == 302 and response["Location"] == "/imaging/upload/"


def test_anonymous_users_are_sent_to_the_login_page(client, db):
    response = client.get(STUDIES)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_the_list_is_in_spanish_when_chosen(client, alice, archive):
    client.force_login(alice)
    client.post("/i18n/setlang/", {"language": "es", "next": STUDIES})
    html = client.get(STUDIES).content.decode()
    assert "<h1>Estudios</h1>" in html and "Buscar" in html
