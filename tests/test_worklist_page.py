# ruff: noqa: F811  (the archive fixtures, imported, are parameters here)
"""The worklist page (/imaging/): its form, its sortable headers and paging links that keep
the filters, a 400 that says what was wrong, and one audit entry per page shown."""

from __future__ import annotations

import datetime
from html import unescape

import pytest
from django.test import Client

from accounts.models import AccessGrant
from audit.models import AuditEvent
from imaging.models import Patient, ReportStatus

from .test_worklist_search import _study, archive, norte  # noqa: F401  (fixtures)

STUDIES = "/imaging/"


def _get(client: Client, user, **params: str):
    client.force_login(user)
    return client.get(STUDIES, params, HTTP_ACCEPT_LANGUAGE="en")


@pytest.mark.parametrize(("params", "named"), [
    ({"date_from": "2024-13-01"}, "date_from"),
    ({"date_to": "yesterday"}, "date_to"),
    ({"date_from": "2024-05-02", "date_to": "2024-05-01"}, "date_from"),
    ({"sort": "size"}, "sort"),
    ({"report_status": "signed"}, "report_status"),
    ({"modality": "C;T"}, "modality"),
    ({"clinic": "abc"}, "clinic"),
    ({"clinic": "999999"}, "clinic"),
    ({"page": "0"}, "page"),
    ({"name": "x" * 101}, "name"),
])
def test_a_search_parameter_that_cannot_be_used_is_400_naming_it(client, alice, archive,
                                                                 params, named):
    response = _get(client, alice, **params)
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/plain")
    assert named in response.content.decode()


def test_the_page_lists_what_the_filters_find_with_their_values_kept_in_the_form(
        client, alice, archive):
    html = _get(client, alice, name="jose", modality="CT", report_status="final").content
    html = html.decode()
    assert "ACC-1" in html and "ACC-5" not in html and "ACC-2" not in html
    assert 'name="name" value="jose"' in html
    assert '<option value="CT" selected>' in html
    assert '<option value="final" selected>' in html
    assert "<details class=\"more-filters\" open>" in html  # filters beyond the quick box


def test_each_study_shows_its_accession_and_its_report_status_in_the_users_language(
        client, alice, archive):
    html = _get(client, alice, accession="ACC-2").content.decode()
    assert "ACC-2" in html and "Preliminary" in html
    assert "MR\\SR" in html


def test_the_clinic_choice_offers_only_the_callers_clinics(client, dora, olga, archive,
                                                           clinic, norte):
    html = _get(client, dora).content.decode()
    assert f'<option value="{clinic.pk}">Clínica Sul</option>' in html
    assert "Clínica Norte" not in html
    html = _get(client, olga).content.decode()
    assert "Clínica Norte" in html and "Clínica Sul" not in html


def test_a_doctor_sees_only_granted_patients_on_the_page(client, dora, archive, clinic):
    AccessGrant.objects.create(doctor=dora, patient=archive["jose"], clinic=clinic)
    html = _get(client, dora).content.decode()
    assert "ACC-1" in html
    assert "ACC-2" not in html and "ACC-5" not in html and "NORTE-1" not in html


def test_the_headers_sort_and_clicking_the_current_one_reverses_it(client, alice, archive):
    html = unescape(_get(client, alice, name="a").content.decode())
    assert 'href="?name=a&sort=name"' in html  # patient, A to Z first
    assert 'href="?name=a&sort=date"' in html  # the current sort (newest first) reversed
    assert 'aria-sort="descending"' in html
    html = unescape(_get(client, alice, name="a", sort="name").content.decode())
    assert 'href="?name=a&sort=-name"' in html
    assert 'href="?name=a"' in html  # back to newest first, the default


@pytest.fixture
def many(clinic) -> None:
    patient = Patient.objects.create(patient_id="MANY", name="SANTOS^MUITOS", clinic=clinic)
    for n in range(60):
        _study(patient, f"CT-{n:03}", datetime.date(2020, 1, 1) + datetime.timedelta(days=n),
               status=ReportStatus.FINAL)


def test_paging_links_keep_the_filters_and_the_sort(client, alice, many):
    response = _get(client, alice, name="santos", report_status="final", sort="accession")
    html = unescape(response.content.decode())
    assert 'href="?name=santos&report_status=final&sort=accession&page=2"' in html
    assert "Page 1 of 2" in html and "60 studies found." in html
    html = unescape(_get(client, alice, name="santos", report_status="final",
                         sort="accession", page="2").content.decode())
    assert 'href="?name=santos&report_status=final&sort=accession"' in html  # previous
    assert "CT-059" in html and "CT-049" not in html
    assert 'rel="next"' not in html


def test_each_page_view_is_one_audit_entry_with_the_search_in_its_detail(client, alice,
                                                                         archive):
    _get(client, alice, name="joão", modality="US")
    [entry] = AuditEvent.objects.filter(action="search")
    assert entry.username == "alice"
    assert entry.detail["query"] == {"name": "joão", "modality": "US", "page": 1}
    assert entry.detail["hits"] == 1


def test_a_refused_search_writes_no_search_entry(client, alice, archive):
    _get(client, alice, sort="size")
    assert not AuditEvent.objects.filter(action="search").exists()


def test_the_page_is_in_portuguese_by_default(client, alice, archive):
    client.force_login(alice)
    html = client.get(STUDIES).content.decode()
    assert "<h1>Exames</h1>" in html and "Pesquisar" in html
