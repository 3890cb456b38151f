"""A study's page in the doctors' workspace: its series with thumbnails and counts, its
relevant priors each with a side-by-side viewer button, the viewer, a staff download
through the sharing service, a place for the report; only for whom the policy allows."""

from __future__ import annotations

import datetime
import re

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import BreakGlassAccess
from audit.models import AuditAction, Outcome
from sharing.models import DownloadLink
from tests import workspace_support
from tests.workspace_support import entries
from viewer import ohif

history_files = workspace_support.history_files
history = workspace_support.history
granted_dora = workspace_support.granted_dora


@pytest.fixture
def viewer_installed(settings, tmp_path):
    (tmp_path / "index.html").write_text("<html></html>")
    settings.OHIF_DIST = tmp_path


def _url(study) -> str:
    return reverse("imaging:study_detail", args=[study.study_instance_uid])


def _page(client: Client, user, study) -> str:
    client.force_login(user)
    response = client.get(_url(study), HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 200
    return response.content.decode()


def test_the_page_shows_each_series_with_its_thumbnail_and_image_count(
        client, granted_dora, history):
    html = _page(client, granted_dora, history.current)
    uid = history.current.study_instance_uid
    series = list(history.current.series.order_by("series_number"))
    for one in series:
        thumbnail = reverse("dicomweb:series-thumbnail", args=[uid, one.series_instance_uid])
        assert f'<img src="{thumbnail}"' in html
    assert html.count("6 images") == 2


def test_each_series_links_to_the_header_of_its_first_instance(client, alice, history):
    html = _page(client, alice, history.current)
    first = (history.current.series.order_by("series_number").first()
             .instances.order_by("instance_number").first())
    assert reverse("imaging:instance_header", args=[
        history.current.study_instance_uid, first.sop_instance_uid]) in html


def test_open_in_the_viewer_loads_the_study(client, alice, history, viewer_installed):
    html = _page(client, alice, history.current)
    expected = f"{reverse('viewer:study')}?{ohif.study_query(history.current.study_instance_uid)}"
    assert f'id="open-viewer" href="{expected}"' in html


def test_each_relevant_prior_has_a_button_opening_both_studies_side_by_side(
        client, alice, history, viewer_installed):
    html = _page(client, alice, history.current)
    current = history.current.study_instance_uid
    priors = [history.studies[n].study_instance_uid
              for n in ("ct_chest_2025", "mr_chest_2025", "ct_head_2024")]
    buttons = re.findall(r'class="ws-button ws-compare" href="([^"]+)"', html)
    assert buttons == [f"{reverse('viewer:study')}?{ohif.study_query(current, prior)}"
                       .replace("&", "&amp;") for prior in priors]
    assert "RM joelho" not in html


def test_a_study_without_earlier_related_studies_says_it_has_no_priors(client, alice, history):
    html = _page(client, alice, history.studies["ct_head_2024"])
    assert "No earlier study of this patient with the same modality or body part." in html


def test_without_the_viewer_installed_there_are_no_viewer_buttons(
        client, alice, history, settings, tmp_path):
    settings.OHIF_DIST = tmp_path / "missing"
    html = _page(client, alice, history.current)
    assert 'id="viewer-missing"' in html and "StudyInstanceUIDs" not in html


def test_staff_download_posts_to_the_sharing_link_page_and_makes_a_link(
        client, granted_dora, history):
    html = _page(client, granted_dora, history.current)
    form = re.search(r'<form method="post" action="([^"]+)" class="inline" id="download">'
                     r'(.*?)</form>', html, re.S)
    assert form is not None and form[1] == reverse("sharing:link_new")
    fields = dict(re.findall(r'name="(study|days|max_uses)" value="([^"]+)"', form[2]))
    response = client.post(form[1], fields)
    assert response.status_code == 200
    link = DownloadLink.objects.get(created_by=granted_dora)
    assert list(link.studies.all()) == [history.current]
    assert "/s/" in response.content.decode()


def test_a_doctor_reading_through_break_the_glass_is_offered_no_download(
        client, dora, history):
    now = timezone.now()
    BreakGlassAccess.objects.create(doctor=dora, patient=history.patient, reason="x" * 20,
                                    opened=now, expires=now + datetime.timedelta(hours=1))
    html = _page(client, dora, history.current)
    assert 'id="download"' not in html


def test_the_report_has_its_place_and_shows_the_report_status_until_reports_are_installed(
        client, alice, history):
    html = _page(client, alice, history.current)
    assert 'id="report"' in html and "No report" in html


def test_the_reports_template_is_included_when_it_exists(client, alice, history, settings,
                                                          tmp_path):
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "_study_report.html").write_text(
        "<p id='the-report'>report of {{ study.accession_number }}</p>")
    engine = settings.TEMPLATES[0]
    settings.TEMPLATES = [{**engine, "DIRS": [tmp_path, *engine["DIRS"]]}]
    html = _page(client, alice, history.current)
    assert "report of ACC-PAULA-1" in html


def test_a_page_view_is_one_audit_entry_viewing_the_study(client, granted_dora, history):
    client.force_login(granted_dora)
    with entries() as written:
        assert client.get(_url(history.current)).status_code == 200
    assert [(e.action, e.outcome, e.level, e.object_uid) for e in written] == [
        (AuditAction.VIEW, Outcome.ALLOWED, "study", history.current.study_instance_uid)]


def test_dora_without_a_grant_gets_404_and_the_refusal_is_on_the_trail(client, dora, history):
    client.force_login(dora)
    with entries() as written:
        assert client.get(_url(history.current)).status_code == 404
    assert [(e.action, e.outcome, e.study_uid) for e in written] == [
        (AuditAction.VIEW, Outcome.DENIED, history.current.study_instance_uid)]


def test_olga_of_another_clinic_gets_404(client, olga, history):
    client.force_login(olga)
    with entries() as written:
        assert client.get(_url(history.current)).status_code == 404
    assert [e.outcome for e in written] == [Outcome.DENIED]


def test_a_patient_never_reaches_the_staff_study_page_even_for_her_own_study(
        client, paula, history):
    history.patient.user = paula
    history.patient.save()
    client.force_login(paula)
    with entries() as written:
        assert client.get(_url(history.current)).status_code == 404
    assert [e.outcome for e in written] == [Outcome.DENIED]


def test_an_unknown_study_is_404_and_on_the_trail(client, alice, db):
    client.force_login(alice)
    with entries() as written:
        response = client.get(reverse("imaging:study_detail", args=["1.2.3.4"]))
    assert response.status_code == 404
    assert [(e.outcome, e.object_uid) for e in written] == [(Outcome.FAILED, "1.2.3.4")]


def test_the_superuser_sees_any_clinics_study(client, alice, history):
    assert "CT tórax" in _page(client, alice, history.current)


def test_the_page_links_back_to_the_patients_timeline(client, alice, history):
    html = _page(client, alice, history.current)
    assert reverse("imaging:patient_timeline", args=[history.patient.pk]) in html
