"""C-GET and C-MOVE of a series that mixes SOP classes and transfer syntaxes (pydicom's own
test files, stored with storescu in the syntax each came in): every object goes out, as it
is where the requester takes its syntax, decompressed where it takes only uncompressed
ones; an object that cannot go is failed with its real cause on the record."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
)

from audit.models import AuditAction, AuditEvent, Outcome
from dimse.models import Peer
from dimse.statuses import Status
from dimse.testing import dataset_bytes, dcmtk, storescp
from imaging.models import Instance

pytestmark = pytest.mark.django_db(transaction=True)

# pydicom test file -> the storescu option that proposes its transfer syntax.
MIXED = {
    "CT_small.dcm": "-xe",  # Explicit VR Little Endian, CT
    "MR_small_implicit.dcm": "-xi",  # Implicit VR Little Endian, MR
    "MR_small_bigendian.dcm": "-xb",  # Explicit VR Big Endian
    "SC_rgb_jpeg_dcmtk.dcm": "-xy",  # JPEG Baseline, Secondary Capture
    "JPEG2000.dcm": "-xw",  # JPEG 2000
    "MR_small_RLE.dcm": "-xr",  # RLE Lossless
    "MR_small_jpeg_ls_lossless.dcm": "-xt",  # JPEG-LS Lossless
    "rtplan.dcm": "-xi",  # RT Plan, no pixels
}
UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}


@pytest.fixture(scope="module")
def mixed_series(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[Path]]:
    """One series of the files above (new UIDs, one patient, study and series)."""
    folder = tmp_path_factory.mktemp("mixed")
    study, series = generate_uid(), generate_uid()
    paths = []
    for name in MIXED:
        source = get_testdata_file(name)
        assert source is not None, name
        ds = dcmread(source)
        ds.PatientID, ds.PatientName = "MIX-001", "Mix^Ed"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(folder / name)
        paths.append(folder / name)
    return study, paths


@pytest.fixture
def stored_mixed(portal, transactional_db, mixed_series, dicom_storage,
                 ) -> tuple[str, list[Path]]:
    """The series stored through the listener, each file in its own transfer syntax."""
    Peer.objects.create(ae_title="MODALITY", host="127.0.0.1", may_store=True)
    _, paths = mixed_series
    for path in paths:
        result = dcmtk("storescu", MIXED[path.name], "-aet", "MODALITY", "-aec",
                       portal.ae_title, *portal.address(), str(path))
        assert result.returncode == 0, result.stderr
    portal.wait_idle()
    assert Instance.objects.count() == len(paths)
    stored = dict(Instance.objects.values_list("sop_instance_uid", "transfer_syntax_uid"))
    for path in paths:  # each in the syntax it came in
        assert stored[_uid(path)] == str(dcmread(path).file_meta.TransferSyntaxUID)
    # What is compared from here on: the objects as stored (storescu re-encodes what it
    # sends, in the same syntax), each with its SOP Instance UID and syntax.
    blobs = [dicom_storage / key for key in Instance.objects.values_list("blob_key", flat=True)]
    return mixed_series[0], blobs


def _uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _by_uid(paths) -> dict[str, Path]:
    return {_uid(Path(p)): Path(p) for p in paths}


def _same_object(received: Path, sent: Path) -> None:
    """Unchanged where the syntax is the same; otherwise the same pixels, uncompressed."""
    got, original = dcmread(received), dcmread(sent)
    if got.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID:
        assert dataset_bytes(received) == dataset_bytes(sent)
        return
    assert str(got.file_meta.TransferSyntaxUID) in UNCOMPRESSED
    assert got.SOPInstanceUID == original.SOPInstanceUID
    if "PixelData" in original:
        assert (got.pixel_array == original.pixel_array).all()


def test_getscu_gets_every_object_of_a_mixed_series_decompressing_what_it_cannot_take(
    portal, stored_mixed, workstation, tmp_path,
):
    """getscu proposes only uncompressed syntaxes by default."""
    study_uid, paths = stored_mixed
    out = tmp_path / "got"
    out.mkdir()
    result = dcmtk("getscu", "-v", "+B", "-aet", "DEST", "-aec", "PORTAL", "-S", "-od", str(out),
                   "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={study_uid}",
                   "-k", f"SeriesInstanceUID={dcmread(paths[0]).SeriesInstanceUID}",
                   *portal.address(), cwd=out)
    assert result.returncode == 0, result.stderr
    assert "0xa702" not in result.stderr.lower() and "Out of Resources" not in result.stderr
    received = _by_uid(out.iterdir())
    sent = _by_uid(paths)
    assert received.keys() == sent.keys(), result.stderr
    for uid, path in sent.items():
        _same_object(received[uid], path)


@pytest.mark.parametrize("accepts_all", [True, False], ids=["as-stored", "uncompressed-only"])
def test_movescu_moves_every_object_of_a_mixed_series(
    portal, stored_mixed, workstation, tmp_path, dest_port, accepts_all: bool,
):
    study_uid, paths = stored_mixed
    with storescp(tmp_path / "dest", port=dest_port, accept_all=accepts_all):
        result = dcmtk("movescu", "-v", "-aet", "DEST", "-aec", "PORTAL", "-aem", "DEST",
                       "-S", "-k", "QueryRetrieveLevel=STUDY",
                       "-k", f"StudyInstanceUID={study_uid}", *portal.address())
    assert result.returncode == 0, result.stderr
    received = _by_uid((tmp_path / "dest").iterdir())
    sent = _by_uid(paths)
    assert received.keys() == sent.keys(), result.stderr
    for uid, path in sent.items():
        _same_object(received[uid], path)
        syntax = dcmread(path).file_meta.TransferSyntaxUID
        if accepts_all and syntax.is_compressed:  # taken as stored, never decompressed
            assert dcmread(received[uid]).file_meta.TransferSyntaxUID == syntax


def test_objects_the_requester_takes_no_context_for_fail_each_with_its_cause(
    portal, stored_mixed, workstation,
):
    """A requester that takes CT only: the CT goes, every other object is failed by name,
    and the record says why for each (not a blanket "out of resources")."""
    study_uid, paths = stored_mixed
    got: list[str] = []

    def on_store(event):
        got.append(str(event.request.AffectedSOPInstanceUID))
        Path(event.dataset_path).unlink(missing_ok=True)
        return Status.SUCCESS

    ae = AE(ae_title="DEST")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate(portal.host, portal.port, ae_title=portal.ae_title,
                         ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_uid
    try:
        answers = list(assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet))
    finally:
        assoc.release()
    portal.wait_idle()
    final, failed_list = answers[-1]
    ct = str(Instance.objects.get(sop_class_uid=CTImageStorage).sop_instance_uid)
    others = sorted(uid for uid in map(_uid, paths) if uid != ct)
    assert got == [ct]
    assert final.Status == 0xB000  # Warning: some sub-operations failed
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (
        1, len(others))
    assert failed_list is not None
    assert sorted(failed_list.FailedSOPInstanceUIDList) == others
    entry = AuditEvent.objects.get(action=AuditAction.RETRIEVE, outcome=Outcome.FAILED)
    assert entry.study_uid == study_uid
    causes = entry.detail["failed"]
    assert sorted(causes) == others
    assert all("no presentation context" in cause for cause in causes.values())


def test_an_object_that_cannot_be_decompressed_fails_with_the_decoders_cause(
    portal, workstation, tmp_path,
):
    """pydicom's JPEG-lossy.dcm is stored as received, but no decoder reads its pixel
    data: a requester taking only uncompressed syntaxes gets a failure that says so."""
    from pynetdicom.sop_class import SecondaryCaptureImageStorage  # type: ignore[attr-defined]

    from imaging.ingest import ingest

    source = get_testdata_file("JPEG-lossy.dcm")
    assert source is not None
    with open(source, "rb") as fp:
        result = ingest(fp)
    assert result.accepted

    def on_store(event):
        Path(event.dataset_path).unlink(missing_ok=True)
        return Status.SUCCESS

    ae = AE(ae_title="DEST")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(SecondaryCaptureImageStorage, "1.2.840.10008.1.2.1")
    assoc = ae.associate(portal.host, portal.port, ae_title=portal.ae_title,
                         ext_neg=[build_role(SecondaryCaptureImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = result.study_instance_uid
    try:
        final, failed_list = list(assoc.send_c_get(
            identifier, StudyRootQueryRetrieveInformationModelGet))[-1]
    finally:
        assoc.release()
    portal.wait_idle()
    assert final.NumberOfFailedSuboperations == 1
    assert failed_list is not None
    assert failed_list.FailedSOPInstanceUIDList == result.sop_instance_uid
    entry = AuditEvent.objects.get(action=AuditAction.RETRIEVE, outcome=Outcome.FAILED)
    assert "cannot be decompressed" in entry.detail["failed"][result.sop_instance_uid]
