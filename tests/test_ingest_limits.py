"""Caps on what comes in: one object (``INGEST_MAX_OBJECT_BYTES``), one STOW-RS request
(``STOW_MAX_REQUEST_BYTES``), how far a ZIP may expand (``ZIP_MAX_EXPANSION_RATIO``), and
DICOMDIR references that must stay inside the media. Each is refused with a reason where
the sender sees it (a 413, a failed-SOP entry, a CLI line, the upload page's result), and
nothing of a refused object is stored."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import requests
from django.utils import translation
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from imaging.models import Instance
from tests.conftest import PASSWORD, stored_files
from tests.test_import_command import import_dicom
from tests.test_stow import CONTENT_TYPE, gunicorn_server, multipart, odd_pieces

__all__ = ["gunicorn_server"]

FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
OUT_OF_RESOURCES = 0xA700
STOW = "/dicomweb/studies"


def _sizes(paths: list[Path]) -> list[int]:
    return [p.stat().st_size for p in paths]


# --- STOW-RS --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_stow_body_announced_larger_than_the_limit_is_413_and_not_read(
    client, tina, ct_study, settings,
):
    paths = ct_study[1][:3]
    body = multipart([p.read_bytes() for p in paths])
    settings.STOW_MAX_REQUEST_BYTES = len(body) - 1
    client.force_login(tina)
    response = client.post(STOW, data=body, content_type=CONTENT_TYPE)
    assert response.status_code == 413
    assert "STOW_MAX_REQUEST_BYTES" in response.json()["error"]
    assert not Instance.objects.exists()


@pytest.mark.django_db
def test_a_stow_part_larger_than_an_object_may_be_is_a_failed_sop_and_the_rest_is_stored(
    client, tina, ct_study, settings, dicom_storage,
):
    small, large = ct_study[1][0], ct_study[1][1]
    big = large.read_bytes() + b"\0" * 4096  # a valid object with trailing padding
    settings.INGEST_MAX_OBJECT_BYTES = len(big) - 1
    client.force_login(tina)
    response = client.post(STOW, data=multipart([small.read_bytes(), big]),
                           content_type=CONTENT_TYPE)
    assert response.status_code == 202
    [failed] = response.json()[FAILED_SOP_SEQUENCE]["Value"]
    assert failed["00081197"]["Value"] == [OUT_OF_RESOURCES]
    assert "INGEST_MAX_OBJECT_BYTES" in failed["00000902"]["Value"][0]
    [stored] = response.json()[REFERENCED_SOP_SEQUENCE]["Value"]
    assert stored["00081155"]["Value"] == [dcmread(small).SOPInstanceUID]
    assert list(Instance.objects.values_list("sop_instance_uid", flat=True)) == [
        dcmread(small).SOPInstanceUID]
    assert len(stored_files(dicom_storage)) == 1


@pytest.fixture
def limited_server(request, monkeypatch, ct_study) -> str:
    """gunicorn (which de-chunks bodies) with a request limit of three CT slices' worth."""
    limit = len(multipart([p.read_bytes() for p in ct_study[1][:3]]))
    monkeypatch.setenv("STOW_MAX_REQUEST_BYTES", str(limit))
    url: str = request.getfixturevalue("gunicorn_server")
    return url


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_chunked_stow_body_is_counted_as_it_streams_and_stopped_at_the_limit(
    limited_server, tina, ct_study,
):
    data = [p.read_bytes() for p in ct_study[1][:6]]
    response = requests.post(
        f"{limited_server}/dicomweb/studies", data=odd_pieces(multipart(data)),
        auth=("tina", PASSWORD), headers={"Content-Type": CONTENT_TYPE}, timeout=120,
    )
    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert response.status_code == 202, response.text
    stored = response.json()[REFERENCED_SOP_SEQUENCE]["Value"]
    assert len(stored) == 3  # the parts that ended before the limit
    [failed] = response.json()[FAILED_SOP_SEQUENCE]["Value"]
    assert "STOW_MAX_REQUEST_BYTES" in failed["00000902"]["Value"][0]
    assert Instance.objects.count() == len(stored)


# --- The import command ---------------------------------------------------------------------


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.mark.django_db
def test_an_import_zip_member_over_the_object_limit_is_a_cli_error_line_and_not_stored(
    tmp_path, ct_study, settings, dicom_storage,
):
    first, second = ct_study[1][0], ct_study[1][1]
    big = second.read_bytes() + b"\0" * 4096
    settings.INGEST_MAX_OBJECT_BYTES = len(big) - 1
    archive = _zip(tmp_path / "in.zip", {"a.dcm": first.read_bytes(), "big.dcm": big})
    out, err = import_dicom(archive)
    assert "1 stored" in out and "1 rejected" in out
    assert f"rejected: {archive}!big.dcm:" in err
    assert "INGEST_MAX_OBJECT_BYTES" in err
    assert Instance.objects.count() == 1
    assert len(stored_files(dicom_storage)) == 1


@pytest.mark.django_db
def test_an_import_file_over_the_object_limit_is_refused(tmp_path, ct_study, settings):
    path = ct_study[1][0]
    settings.INGEST_MAX_OBJECT_BYTES = path.stat().st_size - 1
    with pytest.raises(Exception, match="nothing was imported"):
        import_dicom(path)
    assert not Instance.objects.exists()


@pytest.mark.django_db
def test_a_zip_bomb_is_refused_without_being_unpacked(tmp_path, ct_study, dicom_storage):
    real = ct_study[1][0]
    bomb = _zip(tmp_path / "bomb.zip", {"a.dcm": real.read_bytes(),
                                        "zeros.dcm": b"\0" * (64 * 1024 * 1024)})
    assert bomb.stat().st_size * 200 < 64 * 1024 * 1024
    out, err = import_dicom(bomb)
    assert "1 stored" in out and "1 rejected" in out
    assert f"rejected: {bomb}!zeros.dcm:" in err and "ZIP_MAX_EXPANSION_RATIO" in err
    assert len(stored_files(dicom_storage)) == 1


def _dicomdir(folder: Path, file_ids: list[list[str]]) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.1.3.10")
    ds.file_meta.MediaStorageSOPInstanceUID = UID("1.2.826.0.1.3680043.8.498.1")
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.FileSetID = "LIMITS"
    records = []
    for parts in file_ids:
        record = Dataset()
        record.DirectoryRecordType = "IMAGE"
        record.ReferencedFileID = parts if len(parts) > 1 else parts[0]
        records.append(record)
    ds.DirectoryRecordSequence = records
    path = folder / "DICOMDIR"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.django_db
def test_dicomdir_references_outside_the_media_are_refused_with_a_reason(
    tmp_path, ct_study, dicom_storage,
):
    inside, outside, absolute = ct_study[1][0], ct_study[1][1], ct_study[1][2]
    media = tmp_path / "media"
    (media / "IMG").mkdir(parents=True)
    (media / "IMG" / "I1").write_bytes(inside.read_bytes())
    (tmp_path / "SECRET").write_bytes(outside.read_bytes())
    dicomdir = _dicomdir(media, [["IMG", "I1"], ["..", "SECRET"], [str(absolute)]])
    with translation.override("en"):
        out, err = import_dicom(dicomdir)
    assert "1 stored" in out and "2 rejected" in err + out
    assert err.count("outside the media folder") == 2
    assert list(Instance.objects.values_list("sop_instance_uid", flat=True)) == [
        dcmread(inside).SOPInstanceUID]
    assert len(stored_files(dicom_storage)) == 1


@pytest.mark.django_db
def test_a_link_inside_the_media_to_a_file_outside_is_refused(tmp_path, ct_study):
    media = tmp_path / "media"
    media.mkdir()
    (media / "LINK").symlink_to(ct_study[1][0])
    (media / "I1").write_bytes(ct_study[1][1].read_bytes())
    with translation.override("en"):
        out, err = import_dicom(_dicomdir(media, [["LINK"], ["I1"]]))
    assert "1 stored" in out and "1 rejected" in out
    assert "outside the media folder" in err


# --- The upload page ------------------------------------------------------------------------


def _upload(client, name: str, content: bytes):
    upload = io.BytesIO(content)
    upload.name = name
    return client.post("/imaging/upload/", {"file": [upload]})


@pytest.mark.django_db
def test_an_uploaded_zip_member_over_the_limit_is_that_files_error(
    client, tina, ct_study, settings, tmp_path,
):
    first, second = ct_study[1][0], ct_study[1][1]
    big = second.read_bytes() + b"\0" * 4096
    settings.INGEST_MAX_OBJECT_BYTES = len(big) - 1
    archive = _zip(tmp_path / "up.zip", {"a.dcm": first.read_bytes(), "big.dcm": big})
    client.force_login(tina)
    response = _upload(client, "up.zip", archive.read_bytes())
    assert response.status_code == 200
    results = {r["name"]: r for r in response.json()["results"]}
    assert results["up.zip!a.dcm"]["outcome"] == "stored"
    assert results["up.zip!big.dcm"]["outcome"] == "rejected"
    assert "INGEST_MAX_OBJECT_BYTES" in results["up.zip!big.dcm"]["reason"]
    assert Instance.objects.count() == 1


@pytest.mark.django_db
def test_an_uploaded_file_over_the_limit_is_refused(client, tina, ct_study, settings):
    path = ct_study[1][0]
    settings.INGEST_MAX_OBJECT_BYTES = path.stat().st_size - 1
    client.force_login(tina)
    response = _upload(client, path.name, path.read_bytes())
    assert response.status_code == 422
    [result] = response.json()["results"]
    assert result["outcome"] == "rejected" and "INGEST_MAX_OBJECT_BYTES" in result["reason"]
    assert not Instance.objects.exists()


@pytest.mark.django_db
def test_an_uploaded_zip_bomb_is_refused_member_by_member(client, tina, ct_study, tmp_path):
    bomb = _zip(tmp_path / "bomb.zip", {"a.dcm": ct_study[1][0].read_bytes(),
                                        "zeros.dcm": b"\0" * (64 * 1024 * 1024)})
    client.force_login(tina)
    response = _upload(client, "bomb.zip", bomb.read_bytes())
    results = {r["name"]: r for r in response.json()["results"]}
    assert results["bomb.zip!a.dcm"]["outcome"] == "stored"
    assert results["bomb.zip!zeros.dcm"]["outcome"] == "rejected"
    assert "ZIP_MAX_EXPANSION_RATIO" in results["bomb.zip!zeros.dcm"]["reason"]
