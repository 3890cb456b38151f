"""A rejection note stored by STOW-RS: it rejects what it names within its own study and
patient, never another patient's images, and only if its sender may store there."""

from __future__ import annotations

import os

import pytest
import requests

from accounts.models import AccessGrant
from audit.models import AuditAction, AuditEvent, Outcome
from imaging.models import Instance, Rejection, Study
from tests.conftest import CHARLIE, PASSWORD, PAULA, archived_record, story_clinic
from tests.iocm_support import SAFETY, rejection_note, uid_of

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = pytest.mark.django_db(transaction=True)

BOUNDARY = "iocm-boundary"


def stow(live_server, user: str, *paths) -> requests.Response:
    body = b""
    for path in paths:
        body += (f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                 + path.read_bytes() + b"\r\n")
    body += f"--{BOUNDARY}--\r\n".encode()
    return requests.post(
        f"{live_server.url}/dicomweb/studies", data=body, auth=(user, PASSWORD), timeout=60,
        headers={"Content-Type":
                 f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'})


@pytest.fixture
def both(transactional_db, ct_study, other_study):
    """paula's CT (12 images) and charlie's MR (4), both patients of Clínica Sul."""
    archived_record(ct_study, PAULA.patient_id)
    archived_record(other_study, CHARLIE.patient_id)
    return ct_study, other_study


def test_tina_rejects_two_images_by_stow_and_they_are_gone_from_qido(
        live_server, tina, alice, both, tmp_path):
    (study_uid, paths), _ = both
    note = rejection_note(tmp_path, paths[:2], reason=SAFETY)
    response = stow(live_server, "tina", note)
    assert response.status_code == 200, response.text
    done = Rejection.objects.get()
    assert done.actor == "tina" and done.via == "stow-rs" and done.code_value == SAFETY[0]
    found = requests.get(f"{live_server.url}/dicomweb/studies/{study_uid}/instances",
                         auth=("alice", PASSWORD), timeout=30).json()
    assert {i["00080018"]["Value"][0] for i in found} == {uid_of(p) for p in paths[2:]}
    assert Study.objects.get(study_instance_uid=study_uid).num_instances == 10


def test_a_note_naming_another_patients_images_and_unknown_ones_rejects_only_its_own(
        live_server, tina, both, tmp_path):
    (study_uid, paulas), (_, charlies) = both
    unknown = (study_uid, "2.25.1", "2.25.2")
    note = rejection_note(tmp_path, [paulas[0], charlies[0]], of=paulas[0],
                          extra_uids=[unknown])
    assert stow(live_server, "tina", note).status_code == 200
    done = Rejection.objects.get()
    assert done.rejected_count == 1
    assert sorted(done.not_found) == sorted([uid_of(charlies[0]), "2.25.2"])
    assert Instance.objects.filter(sop_instance_uid=uid_of(charlies[0])).exists()
    assert not Instance.objects.filter(sop_instance_uid=uid_of(paulas[0])).exists()
    [entry] = AuditEvent.objects.filter(action=AuditAction.REJECT)
    assert sorted(entry.detail["not_found"]) == sorted(done.not_found)


def test_a_note_in_paulas_study_for_charlie_rejects_nothing(
        live_server, tina, both, tmp_path):
    (_, paulas), (_, charlies) = both
    note = rejection_note(tmp_path, paulas[:3], of=paulas[0])
    from pydicom import dcmread

    ds = dcmread(note)
    head = dcmread(charlies[0], stop_before_pixels=True)
    ds.PatientID, ds.PatientName = head.PatientID, head.PatientName
    ds.save_as(note)
    stow(live_server, "tina", note)
    assert Instance.objects.filter(sop_instance_uid__in=[uid_of(p) for p in paulas]).count() == 12


def test_a_doctor_adding_reports_cannot_reject(live_server, dora, both, tmp_path):
    (_, paths), _ = both
    AccessGrant.objects.create(doctor=dora, clinic=story_clinic(),
                               patient=Instance.objects.filter(
                                   sop_instance_uid=uid_of(paths[0])).get().series.study.patient)
    dora.set_password(PASSWORD)
    dora.save()
    note = rejection_note(tmp_path, paths[:2])
    response = stow(live_server, "dora", note)
    assert response.status_code == 200, response.text  # stored like any report
    assert not Rejection.objects.exists()
    assert Instance.objects.filter(sop_instance_uid__in=[uid_of(p) for p in paths]).count() == 12
    [refused] = AuditEvent.objects.filter(action=AuditAction.REJECT)
    assert refused.outcome == Outcome.DENIED
