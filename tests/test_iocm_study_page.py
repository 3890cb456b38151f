"""Rejecting from the study page: the clinic's admin picks series and a CID 7011 reason;
the portal makes a real rejection note (a KOS) and stores it through the one ingest path,
so the result is the one of receiving it. The page, the timeline, downloads and shares no
longer show the rejected images; an admin undoes it in the Django admin."""

from __future__ import annotations

import io
import zipfile

import pytest
from django.test import Client
from django.urls import reverse
from pydicom import dcmread

from accounts.models import AccessGrant, Role
from audit.models import AuditAction, AuditEvent
from audit.trail import Actor
from imaging import blobs, rejection
from imaging.models import Instance, Rejection, Series, Study
from sharing import services
from tests.conftest import _user, story_clinic
from tests.test_download_links import body, download_url

pytestmark = pytest.mark.django_db


@pytest.fixture
def ana(db):
    """The admin of Clínica Sul, paula's clinic."""
    user = _user("ana", Role.ADMIN, is_staff=True)
    user.clinics.add(story_clinic())
    return user


def _page(client: Client, study: Study, language: str = "en") -> str:
    response = client.get(reverse("imaging:study_detail", args=[study.study_instance_uid]),
                          HTTP_ACCEPT_LANGUAGE=language)
    assert response.status_code == 200
    return response.content.decode()


def _reject(client: Client, study: Study, series: list[str], reason: str = "113001"):
    return client.post(reverse("imaging:study_reject", args=[study.study_instance_uid]),
                       {"reason": reason, "series": series}, HTTP_ACCEPT_LANGUAGE="en")


def test_the_clinic_admin_rejects_a_series_with_a_real_rejection_note(
        client, ana, paulas_study):
    client.force_login(ana)
    assert 'id="reject-form"' in _page(client, paulas_study)
    first, second = paulas_study.series.order_by("series_number", "pk")
    response = _reject(client, paulas_study, [first.series_instance_uid])
    assert response.status_code == 302
    assert "6 images rejected: Rejected for quality reasons." in _page(client, paulas_study)

    done = Rejection.objects.get()
    assert (done.actor, done.via, done.rejected_count) == ("ana", "study page", 6)
    # The note is a stored object like any other: a valid KOS naming the six images.
    kos = Instance.all_objects.get(sop_instance_uid=done.kos_sop_instance_uid)
    with blobs.open_blob(kos.blob_key) as fp:
        note = dcmread(fp)
    assert note.SOPClassUID == rejection.KOS_SOP_CLASS and note.Modality == "KO"
    assert note.ConceptNameCodeSequence[0].CodeValue == "113001"
    assert note.PatientID == paulas_study.patient.patient_id
    [evidence] = note.CurrentRequestedProcedureEvidenceSequence
    [series] = evidence.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == first.series_instance_uid
    assert len(series.ReferencedSOPSequence) == 6

    html = _page(client, paulas_study)
    assert html.count("6 images") == 2  # the remaining series, once in the strip, once in the form
    assert first.series_instance_uid not in html
    paulas_study.refresh_from_db()
    assert (paulas_study.num_series, paulas_study.num_instances) == (1, 6)
    [entry] = AuditEvent.objects.filter(action=AuditAction.REJECT)
    assert entry.username == "ana" and entry.detail["code"] == "113001"
    assert second.series_instance_uid in html


def test_the_patients_download_and_timeline_leave_the_rejected_images_out(
        client, ana, paula, paulas_study):
    client.force_login(ana)
    first = paulas_study.series.order_by("series_number", "pk").first()
    _reject(client, paulas_study, [first.series_instance_uid])
    timeline = client.get(reverse("imaging:patient_timeline", args=[paulas_study.patient_id]),
                          HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "12 images" not in timeline and "6 images" in timeline
    _link, token = services.create_download_link(paula, [paulas_study],
                                                 actor=Actor.for_user(paula))
    archive = zipfile.ZipFile(io.BytesIO(body(client.get(download_url(token)))))
    images = [n for n in archive.namelist()
              if n not in ("README.TXT", "INDEX.HTM", "DICOMDIR") and not n.endswith("/")]
    uids = {str(dcmread(io.BytesIO(archive.read(n))).SOPInstanceUID) for n in images}
    served = set(Instance.objects.filter(series__study=paulas_study)
                 .values_list("sop_instance_uid", flat=True))
    assert len(served) == 6 and uids == served


def test_the_form_is_in_portuguese(client, ana, paulas_study):
    client.force_login(ana)
    html = _page(client, paulas_study, "pt-br")
    assert "Rejeitar imagens" in html and "Rejeitada por motivos de qualidade" in html


def test_a_doctor_and_another_clinics_admin_may_not_reject(
        client, dora, olga, paulas_study):
    AccessGrant.objects.create(doctor=dora, clinic=story_clinic(), patient=paulas_study.patient)
    series = [paulas_study.series.first().series_instance_uid]
    client.force_login(dora)
    assert 'id="reject-form"' not in _page(client, paulas_study)
    assert _reject(client, paulas_study, series).status_code == 403
    client.force_login(olga)
    assert _reject(client, paulas_study, series).status_code == 404
    assert not Rejection.objects.exists()
    assert Instance.objects.count() == 12


def test_the_form_needs_its_csrf_token(ana, paulas_study):
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(ana)
    assert _reject(strict, paulas_study,
                   [paulas_study.series.first().series_instance_uid]).status_code == 403
    assert not Rejection.objects.exists()


def test_choosing_nothing_rejects_nothing_and_says_so(client, ana, paulas_study):
    client.force_login(ana)
    response = _reject(client, paulas_study, [])
    assert response.status_code == 302
    assert "Choose the series or images to reject." in _page(client, paulas_study)
    assert not Rejection.objects.exists()


def test_an_admin_undoes_the_rejection_in_the_django_admin(client, ana, alice, paulas_study):
    client.force_login(ana)
    first = paulas_study.series.order_by("series_number", "pk").first()
    _reject(client, paulas_study, [first.series_instance_uid])
    done = Rejection.objects.get()
    client.force_login(alice)
    response = client.post(reverse("admin:imaging_rejection_changelist"), {
        "action": "undo_rejections", "_selected_action": [done.pk]},
        HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 302
    done.refresh_from_db()
    assert done.undone is not None and done.undone_by == alice
    paulas_study.refresh_from_db()
    assert (paulas_study.num_series, paulas_study.num_instances) == (2, 12)
    assert Series.objects.filter(study=paulas_study).count() == 2  # the note's KO stays hidden
    [undo] = AuditEvent.objects.filter(action=AuditAction.UNDO_REJECTION)
    assert len(undo.detail["restored"]) == 6


def test_the_admin_rejects_two_single_images_and_the_series_stays_with_the_rest(
        client, ana, paulas_study):
    client.force_login(ana)
    first = paulas_study.series.order_by("series_number", "pk").first()
    two = list(first.instances.order_by("instance_number")
               .values_list("sop_instance_uid", flat=True)[:2])
    assert all(f'name="instance" value="{uid}"' in _page(client, paulas_study) for uid in two)
    response = client.post(reverse("imaging:study_reject", args=[paulas_study.study_instance_uid]),
                           {"reason": "113038", "instance": two})
    assert response.status_code == 302
    assert Rejection.objects.get().rejected_count == 2
    first.refresh_from_db()
    assert (first.num_instances, first.rejected_instances) == (4, 2)
    assert not Instance.objects.filter(sop_instance_uid__in=two).exists()
