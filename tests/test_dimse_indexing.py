"""A received object is answered for once it is staged and spooled; its index rows follow.

Whatever the index lags, a sender that has finished finds all it sent, a query on the same
association finds what it has just sent, the same object twice is stored once, and what a
stopped listener answered for is indexed when it starts again. Nothing answered for is
ever deleted.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import OperationalError
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
)

from audit.models import AuditAction, AuditEvent, Outcome
from audit.trail import Actor
from dimse import indexing
from dimse.models import Peer
from dimse.statuses import Status
from dimse.testing import LOOPBACK, dcmtk, free_port
from imaging import blobs
from imaging.ingest import IngestResult, Staged
from imaging.ingest import Outcome as IngestOutcome
from imaging.ingest import index as ingest_index
from imaging.models import Instance
from tests.conftest import database_url, spooled_object, stored_files

pytestmark = pytest.mark.django_db(transaction=True)

LAG = 0.3  # seconds each index batch is held back in the tests that need a lagging index


@pytest.fixture
def modality(transactional_db) -> Peer:
    return Peer.objects.create(ae_title="MODALITY", host="127.0.0.1", may_store=True,
                               may_query=True, may_retrieve=True)


@pytest.fixture
def lagging_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """Index rows written only LAG seconds after each batch is taken."""
    real = ingest_index

    def slow(staged: list[Staged], **options: Any) -> list[IngestResult]:
        time.sleep(LAG)
        return real(staged, **options)

    monkeypatch.setattr(indexing, "index", slow)


def _spooled() -> list[Path]:
    root = Path(settings.DICOM_SPOOL_DIR)
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.fixture
def scu(portal: Any, modality: Peer) -> Iterator[Any]:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate(portal.host, portal.port, ae_title=portal.ae_title)
    assert assoc.is_established
    yield assoc
    if assoc.is_established:
        assoc.release()
    portal.wait_idle()


def test_a_sender_that_has_finished_finds_all_it_sent_indexed(
    portal: Any, modality: Peer, ct_study: tuple[str, list[Path]], lagging_index: None,
):
    files = ct_study[1]
    result = dcmtk("storescu", "-aet", "MODALITY", "-aec", portal.ae_title,
                   *portal.address(), *map(str, files))
    assert result.returncode == 0, result.stderr
    # storescu has had its release answered: no waiting here.
    assert Instance.objects.count() == len(files)
    assert _spooled() == []
    storage = Path(settings.STORAGES["dicom"]["OPTIONS"]["location"])
    assert len(stored_files(storage)) == len(files)
    for instance in Instance.objects.all():  # checksummed by the index thread
        blob = (storage / instance.blob_key).read_bytes()
        assert instance.sha256 == hashlib.sha256(blob).hexdigest()
        assert instance.size_bytes == len(blob)


def test_a_query_on_the_same_association_finds_what_it_has_just_sent(
    scu: Any, ct_study: tuple[str, list[Path]], lagging_index: None,
):
    files = ct_study[1][:3]
    for path in files:
        assert scu.send_c_store(dcmread(path)).Status == Status.SUCCESS
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = ct_study[0]
    query.SeriesInstanceUID = dcmread(files[0]).SeriesInstanceUID
    query.SOPInstanceUID = ""
    found = {str(identifier.SOPInstanceUID)
             for status, identifier in scu.send_c_find(
                 query, StudyRootQueryRetrieveInformationModelFind)
             if identifier is not None and status.Status in (0xFF00, 0xFF01)}
    assert found == {str(dcmread(p).SOPInstanceUID) for p in files}


def test_the_same_object_twice_on_one_association_is_stored_once(
    scu: Any, ct_study: tuple[str, list[Path]], lagging_index: None,
):
    path = ct_study[1][0]
    first = scu.send_c_store(dcmread(path))
    again = scu.send_c_store(dcmread(path))  # while the first is still waiting for its rows
    changed = dcmread(path)
    changed.SeriesDescription = "changed"
    conflict = scu.send_c_store(changed)
    assert (first.Status, again.Status) == (Status.SUCCESS, Status.SUCCESS)
    assert conflict.Status == Status.DUPLICATE_SOP_INSTANCE
    scu.release()
    instance = Instance.objects.get()
    assert instance.sop_instance_uid == str(dcmread(path).SOPInstanceUID)
    with open(stored_files(Path(settings.STORAGES["dicom"]["OPTIONS"]["location"]))[0],
              "rb") as fp:
        assert dcmread(fp).get("SeriesDescription") != "changed"  # the original is kept


def test_a_series_sent_under_two_studies_on_one_association_is_refused_at_once(
    scu: Any, ct_study: tuple[str, list[Path]], lagging_index: None,
):
    first, second = (dcmread(p) for p in ct_study[1][:2])
    second.StudyInstanceUID = "1.2.826.0.1.3680043.10.1455.99"
    assert scu.send_c_store(first).Status == Status.SUCCESS
    refused = scu.send_c_store(second)
    assert refused.Status == Status.STORE_CANNOT_UNDERSTAND
    scu.release()
    assert list(Instance.objects.values_list("sop_instance_uid", flat=True)) == [
        str(first.SOPInstanceUID)]


def test_what_a_stopped_listener_left_in_its_spool_is_indexed_by_recovery(
    ct_study: tuple[str, list[Path]], tmp_path: Path, dicom_storage: Path,
):
    files = ct_study[1][:3]
    for path in files:
        spooled_object(path, tmp_path, calling_ae="CT 1/A")
    assert Instance.objects.count() == 0

    results = indexing.recover()

    assert [r.outcome for r in results] == [IngestOutcome.STORED] * 3
    assert Instance.objects.count() == 3
    assert set(Instance.objects.values_list("source", flat=True)) == {"cstore:CT 1/A"}
    assert _spooled() == []
    assert len(stored_files(dicom_storage)) == 3  # no orphaned first blobs
    for instance in Instance.objects.all():  # the bytes as they were received
        original = next(p for p in files
                        if str(dcmread(p).SOPInstanceUID) == instance.sop_instance_uid)
        with open(dicom_storage / instance.blob_key, "rb") as fp:
            assert fp.read() == original.read_bytes()
    # Each recovered object is indexed in a transaction of its own, its entry with it.
    entries = AuditEvent.objects.filter(action=AuditAction.STORE)
    assert {e.peer_ae for e in entries} == {"CT 1/A"}
    assert sorted(uid for e in entries for uid in e.detail["stored"]) == sorted(
        Instance.objects.values_list("sop_instance_uid", flat=True))
    assert {e.detail["via"] for e in entries} == {indexing.RECOVERED_VIA}


def test_a_spooled_object_whose_rows_were_written_is_only_removed(
    ct_study: tuple[str, list[Path]], tmp_path: Path, dicom_storage: Path,
):
    staged, spooled = spooled_object(ct_study[1][0], tmp_path)
    ingest_index([staged])  # the rows were committed just before the process stopped

    indexing.recover()

    assert Instance.objects.count() == 1
    assert not spooled.exists()
    assert len(stored_files(dicom_storage)) == 1


def test_an_object_that_cannot_be_indexed_after_its_answer_is_set_aside(
    ct_study: tuple[str, list[Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
):
    staged, spooled = spooled_object(ct_study[1][0], tmp_path)
    conflict = IngestResult(IngestOutcome.CONFLICT, "stored meanwhile with other bytes",
                            staged.parsed.sop_instance_uid)
    monkeypatch.setattr(indexing, "index", lambda items, **_: [conflict for _ in items])
    index = indexing.BackgroundIndex(Actor.peer("MODALITY", "127.0.0.1"),
                                     lambda result: None)
    index.add(staged, spooled)
    index.drain()

    kept = Path(settings.DICOM_SPOOL_DIR) / indexing.UNINDEXED / spooled.name
    assert kept.read_bytes() == ct_study[1][0].read_bytes()  # never deleted
    entry = AuditEvent.objects.get(action=AuditAction.STORE)
    assert entry.outcome == Outcome.FAILED and "not indexed" in entry.reason


def test_a_database_failure_while_indexing_leaves_the_spool_for_recovery(
    ct_study: tuple[str, list[Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
):
    staged, spooled = spooled_object(ct_study[1][0], tmp_path, pid=os.getpid())

    def broken(items: list[Staged], **options: Any) -> list[IngestResult]:
        for item in items:  # as index() does when its transaction fails
            blobs.delete(item.key)
        raise OperationalError("database is locked")

    monkeypatch.setattr(indexing, "index", broken)
    index = indexing.BackgroundIndex(Actor.peer("MODALITY", "127.0.0.1"),
                                     lambda result: None)
    index.add(staged, spooled)
    index.drain()
    assert spooled.exists() and Instance.objects.count() == 0
    monkeypatch.undo()

    indexing.recover()

    assert Instance.objects.get().sop_instance_uid == staged.parsed.sop_instance_uid
    assert not spooled.exists()


def test_the_listener_indexes_a_stopped_listeners_spool_when_it_starts(
    modality: Peer, ct_study: tuple[str, list[Path]], tmp_path: Path, dicom_storage: Path,
):
    spooled_object(ct_study[1][0], tmp_path)
    port = free_port()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings",
           "DATABASE_URL": database_url(), "DATA_DIR": str(tmp_path / "data"),
           "DICOM_STORAGE_DIR": str(dicom_storage),
           "DICOM_SPOOL_DIR": str(settings.DICOM_SPOOL_DIR)}
    env.pop("S3_BUCKET", None)
    process = subprocess.Popen(
        [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "dicom_listener",
         "--host", LOOPBACK, "--port", str(port), "--processes", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 90  # a loaded machine starts Django slowly
        while dcmtk("echoscu", "-aet", "MODALITY", "-aec", "PORTAL", LOOPBACK,
                    str(port), timeout=10).returncode != 0:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.1)
        assert Instance.objects.count() == 1  # indexed before the first association
        assert _spooled() == []
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=30)
    assert b"Indexed 1 received objects" in errors
