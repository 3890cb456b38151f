"""Storing happens within one's clinics too: a new patient belongs to the clinic of whoever
sent it, and nobody stores into another clinic's patient, by any way in.

tina is a technician at Clínica Sul; olga admins Clínica Norte, where a modality (US02) is
bound. paula is Clínica Sul's patient.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from pydicom import dcmread

from accounts.models import Clinic
from audit.models import AuditAction, AuditEvent, Outcome
from dimse.models import Peer
from imaging.ingest import OTHER_CLINIC
from imaging.models import Instance, Patient

from .conftest import ingest_paths, story_clinic
from .test_dimse_echo_store import storescu


def upload(client, path: Path):
    return client.post("/imaging/upload/", {"file": SimpleUploadedFile(
        path.name, path.read_bytes(), content_type="application/dicom")})


def test_a_technicians_upload_of_a_new_patient_belongs_to_her_clinic(client, tina, olga,
                                                                      ct_study):
    assert Clinic.objects.count() == 2  # no "only clinic" to fall back on
    client.force_login(tina)
    assert upload(client, ct_study[1][0]).status_code == 200
    assert Patient.objects.get(patient_id="PAULA-001").clinic == story_clinic()


def test_another_clinics_admin_cannot_upload_into_its_patient(client, tina, olga,
                                                               ct_study):
    ingest_paths(ct_study[1][:1])
    Patient.objects.filter(patient_id="PAULA-001").update(clinic=story_clinic())
    client.force_login(olga)
    response = upload(client, ct_study[1][1])
    assert response.status_code == 422
    [result] = response.json()["results"]
    assert result["reason"] == OTHER_CLINIC
    assert Instance.objects.count() == 1
    assert AuditEvent.objects.filter(action=AuditAction.STORE, outcome=Outcome.FAILED,
                                     reason=OTHER_CLINIC, username="olga").exists()


@pytest.mark.django_db(transaction=True)
def test_a_modality_bound_to_a_clinic_stores_new_patients_into_it_and_not_into_others(
        portal, ct_study, other_study):
    sul = story_clinic()
    norte = Clinic.objects.create(name="Clínica Norte")
    Peer.objects.create(ae_title="US02", host="127.0.0.1", may_store=True, clinic=norte)
    result = storescu(portal, *map(str, other_study[1]), aet="US02")
    assert result.returncode == 0, result.stderr
    assert Patient.objects.get(patient_id="CHARLIE-002").clinic == norte
    ingest_paths(ct_study[1][:1])
    Patient.objects.filter(patient_id="PAULA-001").update(clinic=sul)
    refused = storescu(portal, str(ct_study[1][1]), aet="US02")
    assert "Received Store Response (Error" in refused.stdout + refused.stderr
    assert not Instance.objects.filter(
        sop_instance_uid=dcmread(ct_study[1][1]).SOPInstanceUID).exists()


@pytest.mark.django_db(transaction=True)
def test_a_c_store_above_the_object_size_cap_is_refused_and_nothing_is_kept(
        portal, ct_study, settings, dicom_storage):
    from .conftest import stored_files

    Peer.objects.create(ae_title="CT01", host="127.0.0.1", may_store=True)
    settings.INGEST_MAX_OBJECT_BYTES = 10_000  # a 128x128 CT slice is about 33 kB
    result = storescu(portal, str(ct_study[1][0]), aet="CT01")
    assert "Received Store Response (Refused: OutOfResources)" in result.stdout + result.stderr
    assert not Instance.objects.exists() and not stored_files(dicom_storage)
    assert AuditEvent.objects.filter(action=AuditAction.STORE, outcome=Outcome.FAILED,
                                     reason__contains="INGEST_MAX_OBJECT_BYTES").exists()
