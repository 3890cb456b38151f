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


@pytest.mark.parametrize("persona", ["paula", "charlie"])
def test_a_patient_is_sent_to_her_own_exams_instead_of_the_staff_list(client, request,
                                                                      persona, archive):
    client.force_login(request.getfixturevalue(persona))
    for params in ({}, {"q": "Pereira"}):
        response = client.get(STUDIES, params)
        assert response.status_code == 302 and response["Location"] == "/patient/exams/"


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


def test_listing_studies_is_on_the_audit_trail_once_per_patient_shown(client, alice,
                                                                       archive):
    _page(client, alice)
    entries = AuditEvent.objects.filter(action="search")
    assert {e.username for e in entries} == {"alice"}
    assert len({e.patient_ref for e in entries}) == len(entries) == 2


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
