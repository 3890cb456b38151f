"""An object's STORE entry is written in the transaction of its index rows: both are
committed or neither is, whichever way the object came in."""

from __future__ import annotations

from pathlib import Path

import pytest

from audit.models import AuditAction, AuditEvent, Outcome
from audit.trail import Actor
from imaging import store_audit
from imaging.ingest import IngestBatch, ingest
from imaging.models import Instance
from imaging.store_audit import StoreAudit
from tests.conftest import stored_files

pytestmark = pytest.mark.django_db(transaction=True)

AUDIT = StoreAudit(Actor.system("test"), "test")


def _stored_entries() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=AuditAction.STORE, outcome=Outcome.ALLOWED))


def _listed(entries: list[AuditEvent]) -> list[str]:
    return sorted(uid for entry in entries for uid in entry.detail.get("stored", []))


def test_an_indexed_object_has_its_store_entry(ct_study: tuple[str, list[Path]]):
    study_uid, paths = ct_study
    with paths[0].open("rb") as fp:
        result = ingest(fp, source="test", audit=AUDIT)
    (entry,) = _stored_entries()
    assert entry.study_uid == study_uid
    assert entry.detail == {"via": "test", "instances": 1, "stored": [result.sop_instance_uid]}


def test_a_batch_is_one_entry_per_study_with_its_rows(
    ct_study: tuple[str, list[Path]], other_study: tuple[str, list[Path]],
):
    batch = IngestBatch(AUDIT)
    for path in ct_study[1][:3] + other_study[1][:2]:
        with path.open("rb") as fp:
            batch.add(fp, source="test")
    batch.commit()
    entries = _stored_entries()
    assert sorted(e.study_uid for e in entries) == sorted([ct_study[0], other_study[0]])
    assert _listed(entries) == sorted(Instance.objects.values_list("sop_instance_uid",
                                                                   flat=True))


@pytest.mark.parametrize("objects", [1, 3])
def test_when_the_store_entry_cannot_be_written_the_object_is_not_indexed_either(
    ct_study: tuple[str, list[Path]], dicom_storage: Path, monkeypatch: pytest.MonkeyPatch,
    objects: int,
):
    """The trail failing (a full disk, a lost connection) fails the transaction of the
    rows: nothing is in the archive that is not on the trail, and no blob stays behind."""

    def trail_fails(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the audit trail cannot be written")

    monkeypatch.setattr(store_audit, "record", trail_fails)
    batch = IngestBatch(AUDIT)
    for path in ct_study[1][:objects]:
        with path.open("rb") as fp:
            batch.add(fp, source="test")
    with pytest.raises(RuntimeError):
        batch.commit()
    assert Instance.objects.count() == 0
    assert _stored_entries() == []
    assert stored_files(dicom_storage) == []


def test_duplicates_and_refusals_are_recorded_after_as_before(
    ct_study: tuple[str, list[Path]], tmp_path: Path,
):
    path = ct_study[1][0]
    with path.open("rb") as fp:
        ingest(fp, source="test", audit=AUDIT)
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"not DICOM at all")
    batch = IngestBatch(AUDIT)
    for each in (path, broken):
        with each.open("rb") as fp:
            batch.add(fp, source="test")
    batch.commit()
    entries = list(AuditEvent.objects.filter(action=AuditAction.STORE).order_by("seq"))
    assert [e.detail.get("stored") for e in entries[:1]] == [[_uid(path)]]
    assert entries[1].detail["duplicate"] == [_uid(path)]
    assert entries[2].outcome == Outcome.FAILED and entries[2].detail["result"] == "rejected"


def _uid(path: Path) -> str:
    from pydicom import dcmread

    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
