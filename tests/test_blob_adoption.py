"""A file the caller gives up (the listener's received object) becomes the blob itself.

On a local storage the received file is hard-linked under its key instead of copied, so
the object is written once; the bytes, the checksum and the caller's clean-up are as with
a copy. Where the file cannot be linked, the blob is an ordinary copy.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from django.core.files.storage import FileSystemStorage

from imaging import blobs
from imaging.ingest import Outcome, ingest
from imaging.models import Instance


def _blob_path(key: str) -> Path:
    storage = blobs.storage()
    assert isinstance(storage, FileSystemStorage)
    return Path(storage.path(key))


def test_a_received_file_on_the_same_file_system_is_stored_without_a_copy(
    tmp_path: Path, dicom_storage: Path,
):
    received = tmp_path / "received.dcm"
    received.write_bytes(b"DICM-ish bytes " * 1000)
    with received.open("rb") as fp:
        digest, size = blobs.write(fp, "abc/adopted.dcm", adopt=received)
    stored = _blob_path("abc/adopted.dcm")
    assert stored.stat().st_ino == received.stat().st_ino  # the same file, not a copy
    assert (digest, size) == (hashlib.sha256(received.read_bytes()).hexdigest(),
                              received.stat().st_size)
    received.unlink()  # what pynetdicom does after the handler
    assert stored.read_bytes() == b"DICM-ish bytes " * 1000


def test_a_file_that_cannot_be_linked_is_copied(tmp_path: Path, dicom_storage: Path,
                                                monkeypatch: pytest.MonkeyPatch):
    def no_links(*args: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    received = tmp_path / "received.dcm"
    received.write_bytes(b"other bytes" * 100)
    with received.open("rb") as fp:
        digest, _ = blobs.write(fp, "abc/copied.dcm", adopt=received)
    stored = _blob_path("abc/copied.dcm")
    assert stored.stat().st_ino != received.stat().st_ino
    assert stored.read_bytes() == received.read_bytes()
    assert digest == hashlib.sha256(received.read_bytes()).hexdigest()


@pytest.mark.django_db
def test_an_adopted_object_refused_by_ingest_leaves_no_blob(tmp_path: Path,
                                                            dicom_storage: Path):
    received = tmp_path / "not-dicom.dcm"
    received.write_bytes(b"\x00" * 128 + b"DICM" + b"garbage" * 50)
    with received.open("rb") as fp:
        result = ingest(fp, adopt=received)
    assert result.outcome == Outcome.REJECTED
    assert not any(p.is_file() for p in dicom_storage.rglob("*"))


@pytest.mark.django_db
def test_an_adopted_object_is_indexed_with_the_checksum_of_its_bytes(
    tmp_path: Path, dicom_storage: Path, ct_study: tuple[str, list[Path]],
):
    received = tmp_path / "slice.dcm"
    received.write_bytes(ct_study[1][0].read_bytes())
    with received.open("rb") as fp:
        result = ingest(fp, source="test", adopt=received)
    assert result.outcome == Outcome.STORED and result.instance_id is not None
    instance = Instance.objects.get(pk=result.instance_id)
    received.unlink()
    assert _blob_path(instance.blob_key).read_bytes() == ct_study[1][0].read_bytes()
    assert instance.sha256 == hashlib.sha256(ct_study[1][0].read_bytes()).hexdigest()


def test_files_adopted_into_a_new_and_then_an_existing_folder_are_both_linked(
    tmp_path: Path, dicom_storage: Path,
):
    for name in ("first", "second"):
        received = tmp_path / f"{name}.dcm"
        received.write_bytes(name.encode() * 100)
        with received.open("rb") as fp:
            blobs.write(fp, f"f00/{name}.dcm", adopt=received)
        assert _blob_path(f"f00/{name}.dcm").stat().st_ino == received.stat().st_ino


def test_an_adopted_file_can_be_left_to_the_caller_to_checksum(
    tmp_path: Path, dicom_storage: Path,
):
    received = tmp_path / "received.dcm"
    received.write_bytes(b"later" * 1000)
    with received.open("rb") as fp:
        assert blobs.write(fp, "f01/later.dcm", adopt=received, checksum=False) == (None, 5000)
    assert _blob_path("f01/later.dcm").stat().st_ino == received.stat().st_ino


@pytest.mark.django_db
def test_an_object_staged_without_its_checksum_is_indexed_only_with_it(
    tmp_path: Path, dicom_storage: Path, ct_study: tuple[str, list[Path]],
):
    from imaging.ingest import Staged, checksummed, index, stage

    def staged_slice(number: int) -> tuple[Staged, Path]:
        received = tmp_path / f"slice-{number}.dcm"
        received.write_bytes(ct_study[1][number].read_bytes())
        with received.open("rb") as fp:
            staged = stage(fp, adopt=received, checksum_later=True)
        assert isinstance(staged, Staged) and staged.sha256 == ""
        return staged, received

    unchecked, _ = staged_slice(1)
    with pytest.raises(ValueError, match="no checksum"):
        index([unchecked])
    assert not _blob_path(unchecked.key).exists()  # refused whole: nothing half-stored

    staged, received = staged_slice(0)
    with received.open("rb") as fp:
        [result] = index([checksummed(staged, fp)])
    assert result.outcome == Outcome.STORED
    instance = Instance.objects.get(sop_instance_uid=result.sop_instance_uid)
    assert instance.sha256 == hashlib.sha256(received.read_bytes()).hexdigest()
