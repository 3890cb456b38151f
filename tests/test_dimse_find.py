"""C-FIND from DCMTK's findscu: matching as PS3.4 C.2.2.2 defines, exactly the keys asked."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread

from audit.models import AuditAction, AuditEvent, Outcome
from dimse.models import Peer
from dimse.testing import dcmtk
from imaging.ingest import ingest

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def workstation(transactional_db) -> Peer:
    return Peer.objects.create(ae_title="WORKSTATION", host="127.0.0.1", may_query=True)


@pytest.fixture
def archive(transactional_db, ct_study, other_study):
    """paula's CT study (2 series of 6) and charlie's MR study (1 series of 4)."""
    for _, paths in (ct_study, other_study):
        for path in paths:
            with open(path, "rb") as fp:
                assert ingest(fp).accepted
    return ct_study, other_study


def findscu(portal, tmp_path: Path, *keys: str, model: str = "-S", aet: str = "WORKSTATION"):
    out = tmp_path / "responses"
    out.mkdir(exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    command = ["findscu", "-v", "-aet", aet, "-aec", portal.ae_title, model, "-X",
               "-od", str(out)]
    for key in keys:
        command += ["-k", key]
    result = dcmtk(*command, *portal.address())
    portal.wait_idle()
    return result, [dcmread(p) for p in sorted(out.iterdir())]


def test_study_by_patient_id_answers_one_study_with_exactly_the_keys_asked(
    portal, workstation, archive, tmp_path
):
    (study_uid, _), _ = archive
    result, answers = findscu(
        portal, tmp_path, "QueryRetrieveLevel=STUDY", "PatientID=PAULA-001",
        "StudyInstanceUID", "StudyDate", "ModalitiesInStudy", "NumberOfStudyRelatedInstances",
    )
    assert result.returncode == 0, result.stderr
    [answer] = answers
    assert answer.StudyInstanceUID == study_uid
    assert answer.StudyDate == "20260302"
    assert answer.ModalitiesInStudy == "CT"
    assert int(answer.NumberOfStudyRelatedInstances) == 12
    assert {e.keyword for e in answer} == {
        "SpecificCharacterSet", "QueryRetrieveLevel", "PatientID", "StudyInstanceUID",
        "StudyDate", "ModalitiesInStudy", "NumberOfStudyRelatedInstances",
    }


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("PatientName=Pereira*", {"PAULA-001"}),  # wildcard
        ("PatientName=pereira^paula", {"PAULA-001"}),  # names match without regard to case
        ("PatientName=", {"PAULA-001", "CHARLIE-002"}),  # universal
        ("StudyDate=20260101-", {"PAULA-001"}),  # open range
        ("StudyDate=-20251231", {"CHARLIE-002"}),
        ("StudyDate=20251120", {"CHARLIE-002"}),  # single value
        ("AccessionNumber=ACC-*-1", {"PAULA-001", "CHARLIE-002"}),
        ("ModalitiesInStudy=MR", {"CHARLIE-002"}),
        ("AccessionNumber=NONE", set()),
    ],
)
def test_study_level_matching(portal, workstation, archive, tmp_path, key, expected):
    result, answers = findscu(portal, tmp_path, "QueryRetrieveLevel=STUDY", key, "PatientID")
    assert result.returncode == 0, result.stderr
    assert {str(a.PatientID) for a in answers} == expected


def test_a_list_of_study_uids_matches_each(portal, workstation, archive, tmp_path):
    (paula_uid, _), (charlie_uid, _) = archive
    _, answers = findscu(portal, tmp_path, "QueryRetrieveLevel=STUDY",
                         f"StudyInstanceUID={paula_uid}\\{charlie_uid}")
    assert {a.StudyInstanceUID for a in answers} == {paula_uid, charlie_uid}


def test_series_and_image_levels_under_a_study(portal, workstation, archive, tmp_path):
    (study_uid, paths), _ = archive
    _, series = findscu(portal, tmp_path, "QueryRetrieveLevel=SERIES",
                        f"StudyInstanceUID={study_uid}", "SeriesInstanceUID", "Modality",
                        "NumberOfSeriesRelatedInstances")
    assert len(series) == 2
    assert all(s.Modality == "CT" and int(s.NumberOfSeriesRelatedInstances) == 6
               for s in series)
    _, images = findscu(portal, tmp_path, "QueryRetrieveLevel=IMAGE",
                        f"StudyInstanceUID={study_uid}",
                        f"SeriesInstanceUID={series[0].SeriesInstanceUID}", "SOPInstanceUID",
                        "InstanceNumber")
    stored = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths}
    assert len(images) == 6
    assert {i.SOPInstanceUID for i in images} <= stored


def test_patient_root_patient_level_answers_each_patient_once(
    portal, workstation, archive, tmp_path
):
    _, answers = findscu(portal, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientID",
                         "PatientName", "NumberOfPatientRelatedStudies",
                         "NumberOfPatientRelatedInstances", model="-P")
    found = {str(a.PatientID): (str(a.PatientName), int(a.NumberOfPatientRelatedInstances))
             for a in answers}
    assert found == {"PAULA-001": ("Pereira^Paula", 12), "CHARLIE-002": ("Costa^Charlie", 4)}


def test_study_root_has_no_patient_level(portal, workstation, archive, tmp_path):
    result, answers = findscu(portal, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientID")
    assert answers == []
    assert "DataSetDoesNotMatchSOPClass" in result.stderr  # 0xA900, DCMTK's name for it


def test_a_search_is_on_the_record_for_each_patient_found(
    portal, workstation, archive, tmp_path
):
    findscu(portal, tmp_path, "QueryRetrieveLevel=STUDY", "PatientName=*", "PatientID")
    entries = AuditEvent.objects.filter(action=AuditAction.SEARCH, peer_ae="WORKSTATION")
    assert {e.patient_ref.split("^")[0] for e in entries} == {"PAULA-001", "CHARLIE-002"}


def test_a_peer_without_permission_to_query_learns_nothing(portal, archive, tmp_path):
    Peer.objects.create(ae_title="MODALITY", host="127.0.0.1", may_store=True)
    result, answers = findscu(portal, tmp_path, "QueryRetrieveLevel=STUDY", "PatientID=*",
                              aet="MODALITY")
    assert answers == []
    assert "0x124" in result.stderr.lower() or "0x0124" in result.stderr.lower()
    entry = AuditEvent.objects.get(action=AuditAction.SEARCH)
    assert (entry.peer_ae, entry.outcome) == ("MODALITY", Outcome.DENIED)
