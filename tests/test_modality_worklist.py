"""Modality Worklist: DCMTK's findscu -W, as a modality, finds the procedures scheduled for
it, matched on station, modality, date range, patient and accession; only its clinic's."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from accounts.models import Clinic
from dimse.models import Peer
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

    order(maria, "A1", "CT", "CT01", 10)
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
