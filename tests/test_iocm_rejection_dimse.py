"""A rejection note (IHE IOCM) sent by storescu to the real listener: the images it names
are kept but served nowhere (QIDO, WADO, C-FIND, C-GET, the counts), the note is hidden
too, and an admin's undo brings the images back."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from audit.models import AuditAction, AuditEvent, Outcome
from dimse.models import Peer
from dimse.testing import dcmtk
from imaging import rejection
from imaging.models import Instance, Rejection, Series, Study
from tests.iocm_support import QUALITY, rejection_note, series_of, uid_of
from tests.wado_support import store

pytestmark = pytest.mark.django_db(transaction=True)
DICOM_PARTS = 'multipart/related; type="application/dicom"'


@pytest.fixture
def modality(transactional_db) -> Peer:
    """A node that stores, queries and retrieves, archive-wide."""
    return Peer.objects.create(ae_title="MODALITY", host="127.0.0.1", may_store=True,
                               may_query=True, may_retrieve=True)


@pytest.fixture
def archive(transactional_db, ct_study):
    store(ct_study[1])
    return ct_study


def storescu(portal, *paths: Path):
    result = dcmtk("storescu", "-aet", "MODALITY", "-aec", portal.ae_title,
                   *portal.address(), *map(str, paths))
    portal.wait_idle()
    return result


def findscu(portal, tmp_path: Path, *keys: str) -> list[Dataset]:
    out = tmp_path / "found"
    out.mkdir(exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    command = ["findscu", "-aet", "MODALITY", "-aec", portal.ae_title, "-S", "-X",
               "-od", str(out)]
    for key in keys:
        command += ["-k", key]
    result = dcmtk(*command, *portal.address())
    assert result.returncode == 0, result.stderr
    return [dcmread(p) for p in sorted(out.iterdir())]


def getscu(portal, tmp_path: Path, study_uid: str) -> set[str]:
    out = tmp_path / "got"
    out.mkdir(exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    result = dcmtk("getscu", "-aet", "MODALITY", "-aec", portal.ae_title, "-S",
                   "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
                   "-k", f"StudyInstanceUID={study_uid}", *portal.address(), cwd=out)
    assert result.returncode == 0, result.stderr
    return {uid_of(p) for p in out.iterdir()}


def test_a_rejection_note_by_c_store_hides_the_series_it_names_everywhere(
        portal, modality, archive, tmp_path, client, alice):
    study_uid, paths = archive
    wrong, kept = series_of(paths).values()
    note = rejection_note(tmp_path / "kos", wrong)
    result = storescu(portal, note)
    assert result.returncode == 0, result.stderr

    # Kept, with its original bytes, but marked: who, why, by which note.
    done = Rejection.objects.get()
    assert (done.code_value, done.code_meaning) == QUALITY
    assert done.actor == "MODALITY" and done.via == "C-STORE"
    assert done.kos_sop_instance_uid == uid_of(note)
    assert done.rejected_count == 6 and done.not_found == []
    assert Instance.all_objects.filter(rejection=done).count() == 7  # the note itself too
    assert Instance.objects.filter(series__study__study_instance_uid=study_uid).count() == 6

    # The counts are what is served.
    study = Study.objects.get(study_instance_uid=study_uid)
    assert (study.num_series, study.num_instances, study.modalities) == (1, 6, "CT")

    # C-FIND: one series left, six images, and the note's KO series is not there.
    [found] = findscu(portal, tmp_path, "QueryRetrieveLevel=STUDY",
                      f"StudyInstanceUID={study_uid}", "NumberOfStudyRelatedInstances",
                      "NumberOfStudyRelatedSeries", "ModalitiesInStudy")
    assert int(found.NumberOfStudyRelatedInstances) == 6
    assert int(found.NumberOfStudyRelatedSeries) == 1
    assert found.ModalitiesInStudy == "CT"
    series_found = findscu(portal, tmp_path, "QueryRetrieveLevel=SERIES",
                           f"StudyInstanceUID={study_uid}", "SeriesInstanceUID")
    assert {s.SeriesInstanceUID for s in series_found} == {
        str(dcmread(kept[0], stop_before_pixels=True).SeriesInstanceUID)}

    # C-GET brings back only what is served.
    assert getscu(portal, tmp_path, study_uid) == {uid_of(p) for p in kept}

    # QIDO and WADO: as if the rejected images were not there.
    client.force_login(alice)
    listed = client.get(f"/dicomweb/studies/{study_uid}/instances")
    assert listed.status_code == 200
    assert {i["00080018"]["Value"][0] for i in listed.json()} == {uid_of(p) for p in kept}
    wrong_series = str(dcmread(wrong[0], stop_before_pixels=True).SeriesInstanceUID)
    gone = client.get(f"/dicomweb/studies/{study_uid}/series/{wrong_series}/instances/"
                      f"{uid_of(wrong[0])}", HTTP_ACCEPT=DICOM_PARTS)
    assert gone.status_code == 404
    kept_series = str(dcmread(kept[0], stop_before_pixels=True).SeriesInstanceUID)
    assert client.get(f"/dicomweb/studies/{study_uid}/series/{kept_series}/instances/"
                      f"{uid_of(kept[0])}", HTTP_ACCEPT=DICOM_PARTS).status_code == 200
    assert client.get(f"/dicomweb/studies/{study_uid}/series/{wrong_series}",
                      HTTP_ACCEPT=DICOM_PARTS).status_code == 404
    [qido_study] = client.get(f"/dicomweb/studies?StudyInstanceUID={study_uid}").json()
    assert qido_study["00201208"]["Value"] == [6]

    # On the trail, with the note and the reason.
    [entry] = AuditEvent.objects.filter(action=AuditAction.REJECT)
    assert entry.outcome == Outcome.ALLOWED and entry.peer_ae == "MODALITY"
    assert entry.detail["kos"] == uid_of(note)
    assert sorted(entry.detail["rejected"]) == sorted(uid_of(p) for p in wrong)

    # The undo serves them again (the note stays hidden).
    assert rejection.undo(done.pk, alice) == 6
    assert getscu(portal, tmp_path, study_uid) == {uid_of(p) for p in paths}
    study.refresh_from_db()
    assert (study.num_series, study.num_instances) == (2, 12)
    assert not Series.objects.filter(modality="KO").exists()
    assert AuditEvent.objects.filter(action=AuditAction.UNDO_REJECTION).count() == 1


def test_sending_the_same_note_twice_rejects_once(portal, modality, archive, tmp_path):
    _study_uid, paths = archive
    note = rejection_note(tmp_path / "kos", paths[:2])
    assert storescu(portal, note).returncode == 0
    assert storescu(portal, note).returncode == 0
    assert Rejection.objects.count() == 1
    assert Instance.objects.count() == 10


def test_a_peer_that_may_not_store_cannot_reject(portal, modality, archive, tmp_path):
    Peer.objects.filter(pk=modality.pk).update(may_store=False)
    note = rejection_note(tmp_path / "kos", archive[1][:3])
    storescu(portal, note)
    assert not Rejection.objects.exists()
    assert Instance.objects.count() == 12
