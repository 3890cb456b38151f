"""C-GET and C-MOVE send each stored object's dataset bytes as they are stored, undecoded,
whenever the requester accepted the syntax it is stored in; an object is converted only
when the requester accepted none of its stored syntax, and the trail says so.

The listener runs with its pynetdicom patches (dimse/stored_send.py): pydicom's reader is
made to fail in the retrieve module, so an object that were decoded on its way out would
fail its sub-operation instead of arriving.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from audit.models import AuditAction, AuditEvent, Outcome
from audit.trail import first_broken_link
from dimse import retrieve
from dimse.testing import dataset_bytes, dcmtk, storescp
from imaging.ingest import ingest
from imaging.models import Instance

pytestmark = pytest.mark.django_db(transaction=True)

# pydicom test files, one per transfer syntax.
SYNTAXES = {
    "CT_small.dcm": "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "MR_small_implicit.dcm": "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "MR_small_bigendian.dcm": "1.2.840.10008.1.2.2",  # Explicit VR Big Endian
    "MR_small_jpeg_ls_lossless.dcm": "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "MR_small_RLE.dcm": "1.2.840.10008.1.2.5",  # RLE Lossless
    "JPEG2000.dcm": "1.2.840.10008.1.2.4.91",  # JPEG 2000
}
COMPRESSED = ["MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm"]
UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each test file as a study of its own (new UIDs), so each can be retrieved alone."""
    folder = tmp_path_factory.mktemp("as-stored")
    out = {}
    for name in SYNTAXES:
        source = get_testdata_file(name)
        assert source is not None, name
        ds = dcmread(source)
        ds.PatientID, ds.PatientName = "RAW-001", "Raw^Bytes"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(folder / name)
        out[name] = folder / name
    return out


@pytest.fixture
def stored(transactional_db, files, dicom_storage) -> dict[str, Path]:
    """The files ingested as they are; each name maps to its stored blob."""
    for path in files.values():
        with open(path, "rb") as fp:
            assert ingest(fp).accepted
    blobs = {}
    for name, path in files.items():
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        blobs[name] = dicom_storage / Instance.objects.get(sop_instance_uid=uid).blob_key
        assert dcmread(blobs[name]).file_meta.TransferSyntaxUID == dcmread(
            path).file_meta.TransferSyntaxUID
    return blobs


@pytest.fixture
def never_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a stored object was decoded to be sent")

    monkeypatch.setattr(retrieve, "dcmread", refuse)


def _study(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def _getscu(portal, study_uid: str, out: Path, *options: str):
    out.mkdir()
    return dcmtk("getscu", "-v", "+B", *options, "-aet", "DEST", "-aec", portal.ae_title, "-S",
                 "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
                 "-k", f"StudyInstanceUID={study_uid}", *portal.address(), cwd=out)


def _move(portal, path: Path) -> None:
    result = dcmtk("movescu", "-aet", "DEST", "-aec", portal.ae_title, "-aem", "DEST", "-S",
                   "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={_study(path)}",
                   *portal.address())
    assert result.returncode == 0, result.stderr


def test_getscu_gets_an_explicit_little_endian_object_as_its_stored_bytes_undecoded(
    portal, stored, files, workstation, never_decoded, tmp_path,
):
    """getscu proposes the uncompressed syntaxes, Explicit VR Little Endian first."""
    out = tmp_path / "got"
    result = _getscu(portal, _study(files["CT_small.dcm"]), out)
    assert result.returncode == 0, result.stderr
    [received] = out.iterdir()
    assert dataset_bytes(received) == dataset_bytes(stored["CT_small.dcm"])
    assert str(dcmread(received).file_meta.TransferSyntaxUID) == SYNTAXES["CT_small.dcm"]
    portal.wait_idle()
    entry = AuditEvent.objects.get(action=AuditAction.RETRIEVE)  # one entry, no conversion
    assert (entry.outcome, entry.detail["instances"]) == (Outcome.ALLOWED, 1)


@pytest.mark.parametrize("name", [*COMPRESSED, "CT_small.dcm"])
def test_movescu_to_a_destination_taking_the_stored_syntax_delivers_the_stored_bytes_undecoded(
    portal, stored, files, workstation, never_decoded, tmp_path, dest_port, name: str,
):
    with storescp(tmp_path / "dest", port=dest_port):  # +xa: every syntax DCMTK knows
        _move(portal, files[name])
    [received] = (tmp_path / "dest").iterdir()
    assert str(dcmread(received).file_meta.TransferSyntaxUID) == SYNTAXES[name]
    assert dataset_bytes(received) == dataset_bytes(stored[name])
    portal.wait_idle()
    assert not AuditEvent.objects.filter(detail__has_key="converted").exists()


def test_movescu_of_every_syntax_sends_each_object_as_stored_or_converted_on_the_record(
    portal, stored, files, workstation, tmp_path, dest_port,
):
    """The listener proposes each object's stored syntax first, then the uncompressed ones;
    storescp picks among them by its own preference."""
    with storescp(tmp_path / "dest", port=dest_port):
        for path in files.values():
            _move(portal, path)
    portal.wait_idle()
    received = {str(dcmread(p).SOPInstanceUID): p for p in (tmp_path / "dest").iterdir()}
    assert len(received) == len(stored)
    converted: dict[str, str] = {}
    for entry in AuditEvent.objects.filter(detail__has_key="converted"):
        converted.update(entry.detail["converted"])
    for name, blob in stored.items():
        uid = str(dcmread(blob, stop_before_pixels=True).SOPInstanceUID)
        sent_as = str(dcmread(received[uid]).file_meta.TransferSyntaxUID)
        if sent_as == SYNTAXES[name]:
            assert dataset_bytes(received[uid]) == dataset_bytes(blob)
            assert uid not in converted
        else:
            assert converted[uid] == f"{SYNTAXES[name]} -> {sent_as}"
    assert not set(converted) & {str(dcmread(stored[n]).SOPInstanceUID) for n in COMPRESSED}


def test_a_compressed_object_to_a_peer_taking_only_uncompressed_syntaxes_is_converted_on_the_record(
    portal, stored, files, workstation, tmp_path,
):
    out = tmp_path / "got"
    result = _getscu(portal, _study(files["MR_small_jpeg_ls_lossless.dcm"]), out)  # default
    assert result.returncode == 0, result.stderr
    [received] = out.iterdir()
    got, original = dcmread(received), dcmread(stored["MR_small_jpeg_ls_lossless.dcm"])
    assert str(got.file_meta.TransferSyntaxUID) in UNCOMPRESSED
    assert got.SOPInstanceUID == original.SOPInstanceUID
    assert (got.pixel_array == original.pixel_array).all()
    portal.wait_idle()
    allowed, converted = AuditEvent.objects.filter(action=AuditAction.RETRIEVE).order_by("pk")
    assert allowed.detail["instances"] == 1
    assert converted.outcome == Outcome.ALLOWED
    assert converted.study_uid == str(original.StudyInstanceUID)
    assert "converted" in converted.reason
    [(uid, how)] = converted.detail["converted"].items()
    assert uid == str(original.SOPInstanceUID)
    assert how == f"{original.file_meta.TransferSyntaxUID} -> {got.file_meta.TransferSyntaxUID}"
    assert first_broken_link() is None


def test_an_implicit_vr_object_to_a_peer_taking_explicit_first_is_converted_on_the_record(
    portal, stored, files, workstation, tmp_path,
):
    """The listener accepts Explicit VR Little Endian for getscu's storage contexts (it can
    send every object so); the implicit MR then goes explicit, and the trail says so."""
    out = tmp_path / "got"
    result = _getscu(portal, _study(files["MR_small_implicit.dcm"]), out)
    assert result.returncode == 0, result.stderr
    [received] = out.iterdir()
    assert str(dcmread(received).file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2.1"
    portal.wait_idle()
    converted = AuditEvent.objects.get(action=AuditAction.RETRIEVE, detail__has_key="converted")
    [how] = converted.detail["converted"].values()
    assert how == "1.2.840.10008.1.2 -> 1.2.840.10008.1.2.1"
