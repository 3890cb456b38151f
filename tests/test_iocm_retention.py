"""Rejected images are kept until the patient's records may go, under the same retention
rules, and then purged with them: files, rows and the rejection note alike."""

from __future__ import annotations

import pytest

from audit.trail import Actor
from imaging import rejection
from imaging.models import Instance, Patient, Rejection
from imaging.principals import Principal
from imaging.store_audit import StoreAudit
from privacy import retention
from tests.conftest import ingest_paths, stored_files
from tests.test_retention import AFTER_BOTH, _listed

pytestmark = pytest.mark.django_db


@pytest.fixture
def paulas_record(ct_study) -> Patient:
    ingest_paths(ct_study[1])
    return Patient.objects.get(patient_id="PAULA-001")


def test_rejected_images_stay_until_the_purge_and_go_with_it(
        paulas_record, alice, dicom_storage, django_capture_on_commit_callbacks):
    study = paulas_record.studies.get()
    first = study.series.order_by("series_number", "pk").first()
    rejection.reject_from_portal(study, "113039", series_uids=[first.series_instance_uid],
                                 audit=StoreAudit.within(Actor.for_user(alice), "test",
                                                           Principal.for_user(alice)))
    assert Rejection.objects.count() == 1
    assert len(stored_files(dicom_storage)) == 13  # nothing deleted by rejecting

    request = _listed(paulas_record)
    retention.approve(request.pk, alice, "retenção vencida")
    with django_capture_on_commit_callbacks(execute=True):
        tombstone = retention.purge(request.pk, alice, "retenção vencida", today=AFTER_BOTH)

    assert tombstone.num_instances == 13
    assert not Instance.all_objects.exists() and not Rejection.objects.exists()
    assert stored_files(dicom_storage) == []
