"""The DICOM header page of one instance: every element of its stored metadata, searchable
on the server and as the user types (a static script: the CSP forbids inline ones),
sequences in <details>, private elements marked with their creator."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from audit.models import AuditAction, Outcome
from imaging.models import Instance
from tests import workspace_support
from tests.conftest import ingest_paths
from tests.wado_support import pydicom_file
from tests.workspace_support import entries

history_files = workspace_support.history_files
history = workspace_support.history
granted_dora = workspace_support.granted_dora


@pytest.fixture
def ct_small(db) -> Instance:
    """pydicom's CT_small.dcm: GE private elements and an Other Patient IDs Sequence."""
    ingest_paths([pydicom_file("CT_small.dcm")])
    return Instance.objects.select_related("series__study").get()


def _url(instance: Instance) -> str:
    return reverse("imaging:instance_header",
                   args=[instance.series.study.study_instance_uid, instance.sop_instance_uid])


def _page(client: Client, user, instance: Instance, **params) -> str:
    client.force_login(user)
    response = client.get(_url(instance), params, HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 200
    return response.content.decode()


def _first_of(study) -> Instance:
    return (Instance.objects.select_related("series__study")
            .filter(series__study=study).order_by("series__series_number", "instance_number")
            [0])


def test_the_header_shows_tag_keyword_name_vr_and_value(client, alice, ct_small):
    html = _page(client, alice, ct_small)
    assert "(0010,0010)" in html and "PatientName" in html and "Patient&#x27;s Name" in html
    assert "CompressedSamples^CT1" in html


def test_private_elements_are_marked_private_with_their_creator_and_name(
        client, alice, ct_small):
    html = _page(client, alice, ct_small)
    row = re.search(r'<tr data-search="\(0009,1002\)[^"]*" class="ws-private">(.*?)</tr>',
                    html, re.S)
    assert row is not None
    assert "private: GEMS_IDEN_01" in row[1] and "Suite id" in row[1] and "CT01" in row[1]


def test_a_sequence_is_a_details_element_with_its_items(client, alice, ct_small):
    html = _page(client, alice, ct_small)
    sequence = html[html.index("OtherPatientIDsSequence"):]
    assert re.match(r".*?<details><summary>2 items</summary>", sequence, re.S)
    assert "Item 1" in sequence and "Item 2" in sequence


def test_pixel_data_is_shown_as_bulk_data(client, alice, ct_small):
    html = _page(client, alice, ct_small)
    pixel_row = html[html.index("(7FE0,0010)"):]
    assert "bulk data (kept in the file)" in pixel_row[:600]


def test_a_search_on_the_server_leaves_the_matching_elements(client, alice, ct_small):
    html = _page(client, alice, ct_small, q="gems_iden")
    assert "(0009,0010)" in html and "(0009,1002)" in html
    assert "(0010,0010)" not in html and "(0019,0010)" not in html


def test_a_search_inside_a_sequence_keeps_the_sequence_open(client, alice, ct_small):
    html = _page(client, alice, ct_small, q="OtherPatientIDsSequence")
    assert "<details open>" in html


def test_a_search_matching_nothing_says_so(client, alice, ct_small):
    html = _page(client, alice, ct_small, q="no such element here")
    assert "No element matches the search." in html


def test_the_live_filter_is_a_static_script_not_an_inline_one(client, alice, ct_small):
    html = _page(client, alice, ct_small)
    assert "imaging/dicom_header.js" in html
    assert "data-header-filter" in html
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)


def test_the_page_links_to_the_next_instance_of_the_series(client, alice, history):
    first = _first_of(history.current)
    html = _page(client, alice, first)
    second = first.series.instances.order_by("instance_number")[1]
    assert reverse("imaging:instance_header", args=[
        history.current.study_instance_uid, second.sop_instance_uid]) in html
    assert "instance 1 of 6" in html


def test_an_instance_under_another_studys_url_is_404(client, alice, history):
    instance = _first_of(history.current)
    other = history.studies["ct_chest_2025"].study_instance_uid
    client.force_login(alice)
    url = reverse("imaging:instance_header", args=[other, instance.sop_instance_uid])
    assert client.get(url).status_code == 404


def test_a_page_view_is_one_audit_entry_viewing_the_instance(client, granted_dora, history):
    instance = _first_of(history.current)
    client.force_login(granted_dora)
    with entries() as written:
        assert client.get(_url(instance)).status_code == 200
    assert [(e.action, e.outcome, e.level, e.object_uid) for e in written] == [
        (AuditAction.VIEW, Outcome.ALLOWED, "instance", instance.sop_instance_uid)]


def test_dora_without_a_grant_gets_404_and_the_refusal_is_on_the_trail(client, dora, history):
    instance = _first_of(history.current)
    client.force_login(dora)
    with entries() as written:
        assert client.get(_url(instance)).status_code == 404
    assert [(e.outcome, e.object_uid) for e in written] == [
        (Outcome.DENIED, instance.sop_instance_uid)]


def test_olga_of_another_clinic_gets_404(client, olga, history):
    client.force_login(olga)
    assert client.get(_url(_first_of(history.current))).status_code == 404


def test_a_patient_never_reaches_the_header_page(client, paula, history):
    history.patient.user = paula
    history.patient.save()
    client.force_login(paula)
    assert client.get(_url(_first_of(history.current))).status_code == 404
