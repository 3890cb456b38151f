"""Modality Performed Procedure Step: a modality (pynetdicom, with the MPPS presentation
context) tells the portal it started an order's procedure (N-CREATE, IN PROGRESS) and
completed it (N-SET, COMPLETED); the order follows, the worklist stops offering it, and the
images it sends with the order's accession number are linked to it.

CT01 is Clínica Sul's CT, allowed to store (which is the right to report procedure steps);
paula's order ACC-PAULA-1 is scheduled for it.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.urls import reverse
from django.utils import timezone
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.association import Association

from accounts.models import Clinic
from audit.models import AuditAction, AuditEvent, Outcome
from dimse.models import Peer
from dimse.sop_classes import MODALITY_PERFORMED_PROCEDURE_STEP
from imaging.models import Patient, Study
from orders.models import PerformedProcedureStep, ScheduledProcedure

from .conftest import PAULA, ingest_paths, story_clinic
from .test_dimse_echo_store import storescu
from .test_modality_worklist import accessions, findscu_w

pytestmark = pytest.mark.django_db(transaction=True)

ACCESSION = "ACC-PAULA-1"  # the accession number of the ct_study fixture's images


@pytest.fixture
def modality() -> Peer:
    return Peer.objects.create(ae_title="CT01", host="127.0.0.1", may_store=True,
                               may_query=True, clinic=story_clinic())


@pytest.fixture
def order() -> ScheduledProcedure:
    clinic = story_clinic()
    paula = Patient.objects.create(patient_id=PAULA.patient_id, issuer="DEMO",  # as imaged
                                   name=PAULA.name, clinic=clinic,
                                   birth_date=PAULA.birth_date, sex="F")
    return ScheduledProcedure.objects.create(
        patient=paula, clinic=clinic, accession_number=ACCESSION, requested_procedure_id="RP1",
        requested_procedure_description="CT tórax", modality="CT",
        scheduled_station_ae_title="CT01", scheduled_date=datetime.date(2026, 3, 2),
        scheduled_time=datetime.time(9, 0))


@contextmanager
def mpps_association(portal, aet: str = "CT01") -> Iterator[Association]:
    ae = AE(ae_title=aet)
    ae.add_requested_context(MODALITY_PERFORMED_PROCEDURE_STEP)
    assoc = ae.associate(portal.host, portal.port, ae_title=portal.ae_title)
    assert assoc.is_established
    try:
        yield assoc
    finally:
        assoc.release()
        portal.wait_idle()


def in_progress(accession: str = ACCESSION, patient_id: str = PAULA.patient_id) -> Dataset:
    step = Dataset()
    step.AccessionNumber = accession
    step.RequestedProcedureID = "RP1"
    step.StudyInstanceUID = generate_uid()
    ds = Dataset()
    ds.ScheduledStepAttributesSequence = Sequence([step])
    ds.PatientName = PAULA.name
    ds.PatientID = patient_id
    ds.Modality = "CT"
    ds.PerformedStationAETitle = "CT01"
    ds.PerformedProcedureStepStartDate = "20260302"
    ds.PerformedProcedureStepStartTime = "091500"
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedSeriesSequence = Sequence()
    return ds


def completed(series_uid: str = "1.2.3.4", images: tuple[str, ...] = ("1.2.3.4.1",),
              status: str = "COMPLETED") -> Dataset:
    image = [Dataset() for _ in images]
    for item, uid in zip(image, images, strict=True):
        item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        item.ReferencedSOPInstanceUID = uid
    series = Dataset()
    series.SeriesInstanceUID = series_uid
    series.ReferencedImageSequence = Sequence(image)
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate = "20260302"
    ds.PerformedProcedureStepEndTime = "094000"
    ds.PerformedSeriesSequence = Sequence([series])
    return ds


def create(assoc: Association, ds: Dataset, uid: str) -> int:
    status, _ = assoc.send_n_create(ds, MODALITY_PERFORMED_PROCEDURE_STEP, uid)
    return int(status.Status)


def update(assoc: Association, ds: Dataset, uid: str) -> tuple[int, str]:
    """The N-SET's status, and its Error Comment with its Error ID (if any)."""
    status, _ = assoc.send_n_set(ds, MODALITY_PERFORMED_PROCEDURE_STEP, uid)
    error_id = f" [{int(status.ErrorID):04X}]" if "ErrorID" in status else ""
    return int(status.Status), str(status.get("ErrorComment", "")) + error_id


def status_of(order: ScheduledProcedure) -> str:
    order.refresh_from_db()
    return order.status


def test_n_create_puts_the_order_in_progress_and_n_set_completes_it(portal, modality, order):
    uid = generate_uid()
    with mpps_association(portal) as assoc:
        assert create(assoc, in_progress(), uid) == 0x0000
        assert status_of(order) == ScheduledProcedure.Status.IN_PROGRESS
        step = PerformedProcedureStep.objects.get(sop_instance_uid=uid)
        assert (step.procedure, step.status, step.modality, step.station_ae_title,
                step.patient_id, step.calling_ae_title) == (
            order, "IN PROGRESS", "CT", "CT01", PAULA.patient_id, "CT01")
        assert step.started is not None
        started = timezone.localtime(step.started)  # the modality's clock is local time
        assert (started.date(), started.hour, started.minute) == (
            datetime.date(2026, 3, 2), 9, 15)
        assert step.attributes["00400252"]["Value"] == ["IN PROGRESS"]  # raw, for review

        assert update(assoc, completed(images=("1.2.3.4.1", "1.2.3.4.2")), uid)[0] == 0
    assert status_of(order) == ScheduledProcedure.Status.COMPLETED
    step.refresh_from_db()
    assert step.status == "COMPLETED"
    assert step.ended is not None and timezone.localtime(step.ended).minute == 40
    assert step.performed_series == [{"series_instance_uid": "1.2.3.4",
                                      "images": ["1.2.3.4.1", "1.2.3.4.2"]}]
    entries = AuditEvent.objects.filter(action=AuditAction.STORE, peer_ae="CT01",
                                        outcome=Outcome.ALLOWED)
    assert sorted(e.detail["operation"] for e in entries) == ["MPPS N-CREATE", "MPPS N-SET"]
    assert {e.patient_pk for e in entries} == {order.patient_id}


def test_the_worklist_no_longer_offers_a_completed_procedure(portal, modality, order,
                                                             tmp_path):
    assert accessions(findscu_w(portal, tmp_path, "AccessionNumber=")) == {ACCESSION}
    uid = generate_uid()
    with mpps_association(portal) as assoc:
        assert create(assoc, in_progress(), uid) == 0
    # Started on one modality: not offered to another as still to do.
    assert accessions(findscu_w(portal, tmp_path, "AccessionNumber=")) == set()
    with mpps_association(portal) as assoc:
        assert update(assoc, completed(), uid)[0] == 0
    assert accessions(findscu_w(portal, tmp_path, "AccessionNumber=")) == set()
    assert status_of(order) == ScheduledProcedure.Status.COMPLETED


def test_a_discontinued_procedure_is_offered_again_and_keeps_the_reason(
        portal, modality, order, tmp_path):
    uid = generate_uid()
    changes = completed(status="DISCONTINUED")
    reason = Dataset()
    reason.CodeValue, reason.CodingSchemeDesignator = "110514", "DCM"
    reason.CodeMeaning = "Incorrect worklist entry selected"
    changes.PerformedProcedureStepDiscontinuationReasonCodeSequence = Sequence([reason])
    with mpps_association(portal) as assoc:
        assert create(assoc, in_progress(), uid) == 0
        assert update(assoc, changes, uid)[0] == 0
    assert status_of(order) == ScheduledProcedure.Status.SCHEDULED
    step = PerformedProcedureStep.objects.get(sop_instance_uid=uid)
    assert (step.status, step.discontinuation_reason) == (
        "DISCONTINUED", "Incorrect worklist entry selected")
    assert accessions(findscu_w(portal, tmp_path, "AccessionNumber=")) == {ACCESSION}


def test_a_step_completed_or_discontinued_may_no_longer_be_updated(portal, modality, order):
    uid = generate_uid()
    with mpps_association(portal) as assoc:
        assert create(assoc, in_progress(), uid) == 0
        assert update(assoc, completed(), uid)[0] == 0
        status, comment = update(assoc, completed(status="DISCONTINUED"), uid)
    # PS3.4 F.7.2.2, Table F.7.2-2: "Processing failure", 0110, Error Comment "Performed
    # Procedure Step Object may no longer be updated", Error ID A710.
    assert status == 0x0110
    assert comment.startswith("Performed Procedure Step Object may no longer be updated")
    assert comment.endswith("[A710]")
    assert status_of(order) == ScheduledProcedure.Status.COMPLETED
    assert PerformedProcedureStep.objects.get(sop_instance_uid=uid).status == "COMPLETED"
    assert AuditEvent.objects.filter(action=AuditAction.STORE, outcome=Outcome.FAILED,
                                     detail__operation="MPPS N-SET").exists()


def test_n_set_of_an_unknown_step_is_no_such_object_instance(portal, modality, order):
    with mpps_association(portal) as assoc:
        assert update(assoc, completed(), generate_uid())[0] == 0x0112
    assert status_of(order) == ScheduledProcedure.Status.SCHEDULED


def test_a_second_n_create_of_the_same_step_is_a_duplicate(portal, modality, order):
    uid = generate_uid()
    with mpps_association(portal) as assoc:
        assert create(assoc, in_progress(), uid) == 0
        assert create(assoc, in_progress(), uid) == 0x0111
    assert PerformedProcedureStep.objects.filter(sop_instance_uid=uid).count() == 1


def test_a_step_created_other_than_in_progress_is_refused(portal, modality, order):
    ds = in_progress()
    ds.PerformedProcedureStepStatus = "COMPLETED"
    with mpps_association(portal) as assoc:
        assert create(assoc, ds, generate_uid()) == 0x0106
    assert not PerformedProcedureStep.objects.exists()
    assert status_of(order) == ScheduledProcedure.Status.SCHEDULED


def test_a_peer_without_the_right_to_store_may_not_report(portal, modality, order):
    Peer.objects.create(ae_title="VIEW01", host="127.0.0.1", may_query=True,
                        clinic=story_clinic())
    with mpps_association(portal, aet="VIEW01") as assoc:
        assert create(assoc, in_progress(), generate_uid()) == 0x0124
    assert not PerformedProcedureStep.objects.exists()
    assert status_of(order) == ScheduledProcedure.Status.SCHEDULED
    assert AuditEvent.objects.filter(action=AuditAction.STORE, outcome=Outcome.DENIED,
                                     peer_ae="VIEW01",
                                     detail__operation="MPPS N-CREATE").exists()


def test_another_clinics_modality_may_not_report_on_the_order(portal, modality, order):
    norte = Clinic.objects.create(name="Clínica Norte")
    Peer.objects.create(ae_title="CT09", host="127.0.0.1", may_store=True, clinic=norte)
    with mpps_association(portal, aet="CT09") as assoc:
        assert create(assoc, in_progress(), generate_uid()) == 0x0124
    assert not PerformedProcedureStep.objects.exists()
    assert status_of(order) == ScheduledProcedure.Status.SCHEDULED


def test_an_unscheduled_step_is_kept_without_an_order(portal, modality, order):
    uid = generate_uid()
    with mpps_association(portal) as assoc:
        assert create(assoc, in_progress(accession="WALK-IN"), uid) == 0
    assert PerformedProcedureStep.objects.get(sop_instance_uid=uid).procedure is None
    assert status_of(order) == ScheduledProcedure.Status.SCHEDULED


def test_only_the_modality_that_created_an_unscheduled_step_updates_it(portal, modality,
                                                                       order):
    Peer.objects.create(ae_title="CT02", host="127.0.0.1", may_store=True,
                        clinic=story_clinic())
    uid = generate_uid()
    with mpps_association(portal) as assoc:
        assert create(assoc, in_progress(accession="WALK-IN"), uid) == 0
    with mpps_association(portal, aet="CT02") as assoc:
        assert update(assoc, completed(), uid)[0] == 0x0112
    with mpps_association(portal) as assoc:
        assert update(assoc, completed(), uid)[0] == 0
    assert PerformedProcedureStep.objects.get(sop_instance_uid=uid).status == "COMPLETED"


def test_images_stored_with_the_orders_accession_number_are_linked_to_it(
        portal, modality, order, ct_study, other_study):
    study_uid, paths = ct_study
    result = storescu(portal, *map(str, paths[:2]), aet="CT01")
    assert result.returncode == 0, result.stderr
    result = storescu(portal, *map(str, other_study[1][:1]), aet="CT01")  # charlie's
    assert result.returncode == 0, result.stderr
    order.refresh_from_db()
    assert order.study == Study.objects.get(study_instance_uid=study_uid)
    assert ScheduledProcedure.objects.filter(study__isnull=False).count() == 1


def test_the_order_list_shows_the_status_and_links_the_study(
        portal, modality, order, ct_study, client, alice):
    uid = generate_uid()
    with mpps_association(portal) as assoc:
        assert create(assoc, in_progress(), uid) == 0
        assert update(assoc, completed(), uid)[0] == 0
    assert storescu(portal, str(ct_study[1][0]), aet="CT01").returncode == 0
    client.force_login(alice)
    page = client.get(reverse("admin:orders_scheduledprocedure_changelist"))
    assert page.status_code == 200
    html = page.content.decode()
    assert ACCESSION in html and "Concluído" in html  # pt-BR, the portal's first language
    assert reverse("imaging:study_detail", args=[ct_study[0]]) in html and "abrir estudo" in html
    steps = client.get(reverse("admin:orders_performedprocedurestep_changelist"))
    assert steps.status_code == 200
    assert ACCESSION in steps.content.decode() and "Concluído" in steps.content.decode()


def test_images_imported_by_any_way_in_are_linked_too(order, ct_study):
    ingest_paths(ct_study[1][:1])  # the one ingest path, as an upload or an import
    order.refresh_from_db()
    assert order.study is not None
    assert order.study.study_instance_uid == ct_study[0]


def test_images_of_another_patient_with_the_accession_number_are_not_linked(
        portal, modality, order, ct_study):
    order.patient = Patient.objects.create(patient_id="SUL-9", name="Outra^Pessoa",
                                           clinic=story_clinic())
    order.save()
    result = storescu(portal, *map(str, ct_study[1][:1]), aet="CT01")
    assert result.returncode == 0, result.stderr
    order.refresh_from_db()
    assert order.study is None
