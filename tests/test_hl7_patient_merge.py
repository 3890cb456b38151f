"""ADT^A40 over MLLP merges two patient records end to end: the prior record's studies are
found under the surviving PatientID and name by QIDO-RS, WADO-RS metadata, C-FIND, FHIR and
the portal's pages, and the prior record's portal account follows; the move is on the audit
trail and the stored files are untouched."""

from __future__ import annotations

import hashlib
import json

import pytest
from fhir.resources.R4B.bundle import Bundle
from pydicom import dcmread

from audit.models import AuditAction, AuditEvent
from dimse.models import Peer
from dimse.testing import dcmtk
from imaging.models import Instance, Patient, Study
from orders.models import Hl7Peer
from tests.conftest import archived_record
from tests.hl7_support import MllpClient, adt_a40, hl7_listener, msa

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def two_records(ct_study, other_study, clinic):
    archived_record(ct_study, "PAULA-001")
    archived_record(other_study, "CHARLIE-002")
    Hl7Peer.objects.create(name="EHR Sul", host="127.0.0.1", sending_application="EHR",
                           sending_facility="SUL", clinic=clinic)
    return ct_study[0], other_study[0]


def test_a40_moves_the_prior_patients_studies_under_the_surviving_patient(
    two_records, portal, client, alice, tmp_path, dicom_storage
):
    paulas, charlies = two_records
    files = sorted(p for p in dicom_storage.rglob("*") if p.is_file())
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    with hl7_listener() as server:
        mllp = MllpClient(server.port)
        try:
            ack = mllp.send(adt_a40("MRG-1", "CHARLIE-002", "PAULA-001", "Costa^Charlie"))
        finally:
            mllp.close()
    assert msa(ack)[0] == "AA", msa(ack)
    survivor = Patient.objects.get(patient_id="CHARLIE-002")
    assert set(Study.objects.filter(patient=survivor).values_list(
        "study_instance_uid", flat=True)) == {paulas, charlies}

    client.force_login(alice)
    found = client.get("/dicomweb/studies", {"PatientID": "CHARLIE-002"}).json()
    assert {s["0020000D"]["Value"][0] for s in found} == {paulas, charlies}
    assert not client.get("/dicomweb/studies", {"PatientID": "PAULA-001"}).content.strip(b"[]")
    response = client.get(f"/dicomweb/studies/{paulas}/metadata")
    metadata = json.loads(b"".join(response.streaming_content))
    assert {m["00100020"]["Value"][0] for m in metadata} == {"CHARLIE-002"}
    assert {m["00100010"]["Value"][0]["Alphabetic"] for m in metadata} == {"Costa^Charlie"}

    Peer.objects.create(ae_title="WORKSTATION", host="127.0.0.1", may_query=True)
    out = tmp_path / "found"
    out.mkdir()
    result = dcmtk("findscu", "-aet", "WORKSTATION", "-aec", portal.ae_title, "-S", "-X",
                   "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
                   "-k", "PatientID=CHARLIE-002", "-k", "StudyInstanceUID",
                   *portal.address())
    portal.wait_idle()
    assert result.returncode == 0, result.stderr
    assert {dcmread(p).StudyInstanceUID for p in out.iterdir()} == {paulas, charlies}

    moved = AuditEvent.objects.filter(action=AuditAction.STORE,
                                      detail__event="patient_merge", study_uid=paulas)
    assert moved.get().patient_ref == "CHARLIE-002^DEMO"
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files} == before
    assert Instance.objects.filter(series__study__study_instance_uid=paulas).count() == 12


def test_a40_for_a_prior_patient_not_in_the_archive_is_answered_ae(two_records):
    with hl7_listener() as server:
        mllp = MllpClient(server.port)
        try:
            code, _, text = msa(mllp.send(adt_a40("MRG-2", "CHARLIE-002", "NOBODY",
                                                  "Costa^Charlie")))
        finally:
            mllp.close()
    assert code == "AE"
    assert "NOBODY" in text
    assert Study.objects.filter(patient__patient_id="PAULA-001").count() == 1


def test_a40_writes_one_audit_entry_for_the_merged_prior_record_and_one_per_study_moved(
        two_records):
    paulas, _ = two_records
    prior = Patient.objects.get(patient_id="PAULA-001")
    with hl7_listener() as server:
        mllp = MllpClient(server.port)
        try:
            assert msa(mllp.send(adt_a40("MRG-3", "CHARLIE-002", "PAULA-001",
                                         "Costa^Charlie")))[0] == "AA"
        finally:
            mllp.close()
    merged = AuditEvent.objects.filter(action=AuditAction.STORE,
                                       detail__event="patient_merge")
    [record] = merged.filter(level="patient")
    assert (record.patient_pk, record.object_uid, record.peer_ae) == (
        prior.pk, "PAULA-001", "EHR")
    assert (record.detail["prior_patient_id"], record.detail["surviving_patient_id"],
            record.detail["studies_moved"], record.detail["control_id"]) == (
        "PAULA-001", "CHARLIE-002", [paulas], "MRG-3")
    assert record.reason == "patient records merged"
    [study] = merged.filter(level="study")
    assert (study.study_uid, study.patient_ref) == (paulas, "CHARLIE-002^DEMO")
    assert merged.count() == 2


def test_after_a40_fhir_the_pages_and_the_patients_own_account_follow_the_survivor(
    ct_study, other_study, clinic, paula, alice, client
):
    """paula's record (with her portal account) is the prior one; charlie's has none: after
    the merge FHIR, the staff's timeline and paula's own exams page all show both studies
    under the surviving record."""
    paulas_record = archived_record(ct_study, "PAULA-001")
    paulas_record.user = paula
    paulas_record.save()
    archived_record(other_study, "CHARLIE-002")
    Hl7Peer.objects.create(name="EHR Sul", host="127.0.0.1", sending_application="EHR",
                           sending_facility="SUL", clinic=clinic)
    both = {ct_study[0], other_study[0]}
    with hl7_listener() as server:
        mllp = MllpClient(server.port)
        try:
            ack = mllp.send(adt_a40("MRG-2", "CHARLIE-002", "PAULA-001", "Costa^Charlie"))
        finally:
            mllp.close()
    assert msa(ack)[0] == "AA", msa(ack)
    survivor = Patient.objects.get(patient_id="CHARLIE-002")
    assert survivor.user == paula
    assert not Patient.objects.filter(patient_id="PAULA-001", studies__isnull=False).exists()

    client.force_login(alice)
    found = client.get("/fhir/ImagingStudy", {"patient.identifier": "CHARLIE-002"})
    assert found.status_code == 200, found.content
    bundle = Bundle.model_validate_json(found.content)
    assert {getattr(entry.resource, "id", None) for entry in bundle.entry or []} == both
    gone = Bundle.model_validate_json(
        client.get("/fhir/ImagingStudy", {"patient.identifier": "PAULA-001"}).content)
    assert gone.total == 0
    timeline = client.get(f"/imaging/patients/{survivor.pk}/")
    assert timeline.status_code == 200
    assert all(uid in timeline.content.decode() for uid in both)

    client.force_login(paula)
    exams = client.get("/patient/exams/")
    assert exams.status_code == 200
    assert all(uid in exams.content.decode() for uid in both)
