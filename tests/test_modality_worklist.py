"""Modality Worklist: DCMTK's findscu -W and pynetdicom, as a modality, find the procedures
scheduled for it, matched on station, modality, date range, patient and accession; only its
clinic's; each answer with the referring physician and the priority."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE

from accounts.models import Clinic
from dimse.models import Peer
from dimse.sop_classes import MODALITY_WORKLIST_FIND
from dimse.statuses import Status
from dimse.testing import dcmtk
from imaging.models import Patient
from orders.models import ScheduledProcedure

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def modality(clinic) -> Peer:
    return Peer.objects.create(ae_title="CT01", host="127.0.0.1", may_query=True,
                               clinic=clinic)


@pytest.fixture
def schedule(clinic):
    maria = Patient.objects.create(patient_id="SUL-1", name="Souza^Maria", clinic=clinic,
                                   birth_date=datetime.date(1980, 5, 17), sex="F")
    jorge = Patient.objects.create(patient_id="SUL-2", name="Lima^Jorge", clinic=clinic)
    norte = Clinic.objects.create(name="Clínica Norte")
    rui = Patient.objects.create(patient_id="NORTE-1", name="Souza^Rui", clinic=norte)

    def order(patient: Patient, accession: str, modality: str, station: str, day: int,
              **extra: object) -> ScheduledProcedure:
        return ScheduledProcedure.objects.create(
            patient=patient, clinic_id=patient.clinic_id or 0, accession_number=accession,
            modality=modality, scheduled_station_ae_title=station,
            scheduled_date=datetime.date(2026, 3, day), scheduled_time=datetime.time(9, 30),
            requested_procedure_id=f"RP{accession}", requested_procedure_description="TC",
            **extra)

    order(maria, "A1", "CT", "CT01", 10, referring_physician="Ramos^Paulo",
          priority=ScheduledProcedure.Priority.STAT)
    order(jorge, "A2", "MR", "MR01", 11)
    order(maria, "A3", "CT", "CT01", 12, status=ScheduledProcedure.Status.CANCELLED)
    order(rui, "N1", "CT", "CT01", 10)


def findscu_w(portal, tmp_path: Path, *keys: str) -> list[Dataset]:
    out = tmp_path / "worklist"
    out.mkdir(exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    command = ["findscu", "-W", "-aet", "CT01", "-aec", portal.ae_title, "-X", "-od",
               str(out), "-k", "PatientName", "-k", "PatientID", "-k", "AccessionNumber",
               "-k", "ScheduledProcedureStepSequence[0].Modality",
               "-k", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate",
               "-k", "ScheduledProcedureStepSequence[0].ScheduledStationAETitle"]
    for key in keys:
        command += ["-k", key]
    result = dcmtk(*command, *portal.address())
    portal.wait_idle()
    assert result.returncode == 0, result.stderr
    return [dcmread(p) for p in sorted(out.iterdir())]


def accessions(answers) -> set[str]:
    return {str(a.AccessionNumber) for a in answers}


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("AccessionNumber=", {"A1", "A2"}),  # universal; cancelled and other clinic's not
        ("ScheduledProcedureStepSequence[0].ScheduledStationAETitle=CT01", {"A1"}),
        ("ScheduledProcedureStepSequence[0].Modality=MR", {"A2"}),
        ("ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20260311-",
         {"A2"}),
        ("ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20260310",
         {"A1"}),
        ("PatientName=souza*", {"A1"}),
        ("PatientID=SUL-2", {"A2"}),
        ("AccessionNumber=A?", {"A1", "A2"}),
        ("AccessionNumber=NONE", set()),
    ],
)
def test_findscu_w_finds_the_scheduled_procedures_that_match(
    portal, modality, schedule, tmp_path, key, expected
):
    assert accessions(findscu_w(portal, tmp_path, key)) == expected


def test_an_answer_carries_the_patient_and_the_scheduled_step(
    portal, modality, schedule, tmp_path
):
    [answer] = findscu_w(portal, tmp_path, "AccessionNumber=A1")
    assert (str(answer.PatientName), answer.PatientID) == ("Souza^Maria", "SUL-1")
    [step] = answer.ScheduledProcedureStepSequence
    assert (step.Modality, step.ScheduledStationAETitle,
            step.ScheduledProcedureStepStartDate) == ("CT", "CT01", "20260310")


def test_an_answer_carries_the_referring_physician_and_the_priority(
    portal, modality, schedule, tmp_path
):
    [answer] = findscu_w(portal, tmp_path, "AccessionNumber=A1", "ReferringPhysicianName",
                         "RequestedProcedurePriority")
    assert str(answer.ReferringPhysicianName) == "Ramos^Paulo"
    assert answer.RequestedProcedurePriority == "STAT"
    [routine] = findscu_w(portal, tmp_path, "AccessionNumber=A2",
                          "RequestedProcedurePriority")
    assert routine.RequestedProcedurePriority == "ROUTINE"


def test_a_modality_querying_with_pynetdicom_gets_its_worklist(portal, modality, schedule):
    """As a modality's own DICOM stack asks: its station and today's range, the keys it
    fills its exam from, one Pending answer per procedure, then Success."""
    step = Dataset()
    step.ScheduledStationAETitle = "CT01"
    step.ScheduledProcedureStepStartDate = "20260301-20260331"
    step.Modality = "CT"
    step.ScheduledProcedureStepStartTime = ""
    step.ScheduledProcedureStepID = ""
    query = Dataset()
    query.ScheduledProcedureStepSequence = [step]
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                    "AccessionNumber", "RequestedProcedureID",
                    "RequestedProcedureDescription", "ReferringPhysicianName",
                    "RequestedProcedurePriority"):
        setattr(query, keyword, "")
    ae = AE(ae_title="CT01")
    ae.add_requested_context(MODALITY_WORKLIST_FIND)
    assoc = ae.associate(portal.host, portal.port, ae_title=portal.ae_title)
    assert assoc.is_established
    try:
        responses = list(assoc.send_c_find(query, MODALITY_WORKLIST_FIND))
    finally:
        assoc.release()
        portal.wait_idle()
    statuses = [int(status.Status) for status, _ in responses]
    assert statuses == [Status.PENDING, Status.SUCCESS]
    [answer] = [identifier for status, identifier in responses
                if int(status.Status) == Status.PENDING]
    assert answer is not None
    assert (str(answer.PatientName), answer.PatientID, answer.PatientBirthDate,
            answer.PatientSex) == ("Souza^Maria", "SUL-1", "19800517", "F")
    assert (answer.AccessionNumber, answer.RequestedProcedureID,
            str(answer.ReferringPhysicianName), answer.RequestedProcedurePriority) == (
        "A1", "RPA1", "Ramos^Paulo", "STAT")
    [scheduled] = answer.ScheduledProcedureStepSequence
    assert (scheduled.ScheduledStationAETitle, scheduled.Modality,
            scheduled.ScheduledProcedureStepStartDate,
            scheduled.ScheduledProcedureStepStartTime) == ("CT01", "CT", "20260310", "093000")
