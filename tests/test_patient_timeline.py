"""A patient's timeline in the doctors' workspace: every study the caller may see, newest
first, with a thumbnail per series, and the relevant priors of the newest study marked."""

from __future__ import annotations

import re

from django.test import Client
from django.urls import reverse
from django.utils import translation

from audit.models import AuditAction, Outcome
from imaging import principals
from imaging.priors import Tier
from imaging.timeline import build_timeline
from tests import workspace_support
from tests.workspace_support import entries

history_files = workspace_support.history_files
history = workspace_support.history
granted_dora = workspace_support.granted_dora


def _url(history) -> str:
    return reverse("imaging:patient_timeline", args=[history.patient.pk])


def _page(client: Client, user, history, **params) -> str:
    client.force_login(user)
    response = client.get(_url(history), params, HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 200
    return response.content.decode()


def test_the_timeline_lists_every_study_of_the_patient_newest_first(alice, history):
    found = build_timeline(alice, history.patient)
    dates = [str(card.study.study_date) for card in found.studies]  # ISO dates
    assert len(found.studies) == 6
    assert dates == sorted(dates, reverse=True)
    assert found.current is not None and found.current.uid == history.current.study_instance_uid


def test_the_priors_of_the_newest_study_are_marked_with_their_tier_and_time_before(
        alice, history):
    with translation.override("en"):
        found = build_timeline(alice, history.patient)
    marks = {card.study.description: (card.prior.tier, card.prior.time_before)
             for card in found.studies if card.prior}
    assert marks == {
        "CT tórax controle": (Tier.SAME_MODALITY_AND_BODY_PART, "1 year earlier"),
        "RM tórax": (Tier.SAME_BODY_PART, "3 months earlier"),
        "TC crânio": (Tier.SAME_MODALITY, "1 year earlier"),
    }
    assert [c.study.description for c in found.priors] == [
        "CT tórax controle", "RM tórax", "TC crânio"]


def test_a_study_of_another_body_part_and_modality_and_one_of_the_same_day_are_not_marked(
        alice, history):
    found = build_timeline(alice, history.patient)
    unmarked = {card.study.description for card in found.studies if card.prior is None}
    assert unmarked == {"CT tórax", "RM joelho", "CT tórax mesmo dia"}


def test_another_study_can_be_chosen_to_mark_its_priors(alice, history):
    chosen = history.studies["mr_chest_2025"]
    found = build_timeline(alice, history.patient, chosen.study_instance_uid)
    assert found.current is not None and found.current.uid == chosen.study_instance_uid
    # The chest MR: the chest CT before it (same body part), the knee MR (same modality).
    assert [c.study.description for c in found.priors] == ["CT tórax controle", "RM joelho"]


def test_each_series_has_its_modality_body_part_count_and_a_thumbnail(alice, history):
    found = build_timeline(alice, history.patient)
    current = found.current
    assert current is not None
    assert [(s.modality, s.body_part, s.count) for s in current.series] == [
        ("CT", "CHEST", 6), ("CT", "CHEST", 6)]
    series = current.series[0]
    assert series.thumbnail_url == reverse(
        "dicomweb:series-thumbnail", args=[current.uid, series.uid])


def test_the_thumbnails_load_in_the_doctors_browser_session(client, granted_dora, history):
    html = _page(client, granted_dora, history)
    thumbnails = re.findall(r'<img src="([^"]+/thumbnail)"', html)
    assert len(thumbnails) == 7  # one per series: two for the CT, one for each other study
    response = client.get(thumbnails[0], HTTP_ACCEPT="image/avif,image/webp,image/*,*/*;q=0.8")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"


def test_a_visits_thumbnails_are_one_viewing_session_per_study_on_the_trail(
        client, granted_dora, history):
    from audit.models import AuditEvent

    html = _page(client, granted_dora, history)
    thumbnails = re.findall(r'<img src="([^"]+/thumbnail)"', html)
    before = AuditEvent.objects.count()
    for url in thumbnails + thumbnails:
        assert client.get(url, HTTP_ACCEPT="image/jpeg").status_code == 200
    studies = {url.split("/studies/")[1].split("/")[0] for url in thumbnails}
    # One entry opens each study's viewing session; the reads after it are counted on it.
    assert AuditEvent.objects.count() - before == len(studies)


def test_the_page_shows_the_priors_with_their_tier_and_time_before(client, alice, history):
    html = _page(client, alice, history)
    assert "same modality and body part · 1 year earlier" in html
    assert "same body part · 3 months earlier" in html
    assert html.count("relevant prior") == 3


def test_the_page_links_each_study_to_its_page_and_priors_to_a_side_by_side_viewer(
        client, alice, history, settings, tmp_path):
    (tmp_path / "index.html").write_text("<html></html>")
    settings.OHIF_DIST = tmp_path
    html = _page(client, alice, history)
    current = history.current.study_instance_uid
    prior = history.studies["ct_chest_2025"].study_instance_uid
    assert reverse("imaging:study_detail", args=[prior]) in html
    assert f"StudyInstanceUIDs={current}%2C{prior}&amp;hangingProtocolId=" in html
    assert html.count("Side by side with the current study") == 3


def test_without_the_viewer_installed_the_page_says_so_and_offers_no_viewer_link(
        client, alice, history, settings, tmp_path):
    settings.OHIF_DIST = tmp_path / "missing"
    html = _page(client, alice, history)
    assert 'id="viewer-missing"' in html
    assert "StudyInstanceUIDs" not in html


def test_a_page_view_is_one_audit_entry_viewing_the_patient(client, granted_dora, history):
    client.force_login(granted_dora)
    with entries() as written:
        assert client.get(_url(history)).status_code == 200
    assert [(e.action, e.outcome, e.level, e.patient_pk) for e in written] == [
        (AuditAction.VIEW, Outcome.ALLOWED, "patient", history.patient.pk)]


def test_dora_without_a_grant_gets_404_and_the_refusal_is_on_the_trail(client, dora, history):
    client.force_login(dora)
    with entries() as written:
        assert client.get(_url(history)).status_code == 404
    assert [(e.action, e.outcome, e.patient_pk) for e in written] == [
        (AuditAction.VIEW, Outcome.DENIED, history.patient.pk)]


def test_olga_of_another_clinic_gets_404(client, olga, history):
    client.force_login(olga)
    with entries() as written:
        assert client.get(_url(history)).status_code == 404
    assert [e.outcome for e in written] == [Outcome.DENIED]


def test_a_patient_never_reaches_the_staff_timeline_even_her_own(client, paula, history):
    history.patient.user = paula
    history.patient.save()
    client.force_login(paula)
    with entries() as written:
        assert client.get(_url(history)).status_code == 404
    assert [e.outcome for e in written] == [Outcome.DENIED]


def test_a_technician_gets_404(client, tina, history):
    client.force_login(tina)
    assert client.get(_url(history)).status_code == 404


def test_an_unknown_patient_is_404_and_on_the_trail(client, alice, db):
    client.force_login(alice)
    with entries() as written:
        assert client.get(reverse("imaging:patient_timeline", args=[999999])).status_code == 404
    assert [(e.outcome, e.detail.get("patient_pk")) for e in written] == [
        (Outcome.FAILED, 999999)]


def test_signed_out_visitors_are_sent_to_log_in(client, history):
    response = client.get(_url(history))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_the_timeline_lists_only_studies_the_caller_may_find(olga, dora, history):
    assert build_timeline(principals.Principal.for_user(olga), history.patient).studies == []
    assert build_timeline(dora, history.patient).studies == []


def test_the_superuser_sees_every_study(client, alice, history):
    html = _page(client, alice, history)
    for description in ("CT tórax controle", "RM tórax", "TC crânio", "RM joelho"):
        assert description in html


def test_the_page_is_in_portuguese_by_default(client, alice, history):
    client.force_login(alice)
    html = client.get(_url(history)).content.decode()
    assert '<html lang="pt-br">' in html


def test_the_page_takes_a_fixed_number_of_queries_however_many_studies(
        client, alice, history, django_assert_max_num_queries):
    client.force_login(alice)
    # Once first, so what a process looks up once and keeps (and what other tests in the
    # same worker may have dropped) is not counted: the page's own queries are.
    assert client.get(_url(history)).status_code == 200
    with django_assert_max_num_queries(12):  # six studies, seven series: 9 today
        assert client.get(_url(history)).status_code == 200
