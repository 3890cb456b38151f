"""C-ECHO and C-STORE from DCMTK: objects arrive unchanged, through the one ingest path."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pynetdicom import AE

from audit.models import AuditAction, AuditEvent, Outcome
from dimse.models import Peer
from dimse.testing import dataset_bytes, dcmtk, storescp
from imaging.models import Instance

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.pynetdicom_as_is_too]


@pytest.fixture
def modality(transactional_db) -> Peer:
    return Peer.objects.create(ae_title="MODALITY", host="127.0.0.1", may_store=True)


def _sop_uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def storescu(portal, *args: str, aet: str = "MODALITY"):
    result = dcmtk("storescu", "-v", "-aet", aet, "-aec", portal.ae_title, *portal.address(),
                   *args)
    portal.wait_idle()
    return result


def test_a_known_peer_gets_an_answer_to_echo_and_the_association_is_on_the_record(
    portal, modality
):
    result = dcmtk("echoscu", "-aet", "MODALITY", "-aec", "PORTAL", *portal.address())
    assert result.returncode == 0, result.stderr
    portal.wait_idle()
    entry = AuditEvent.objects.get(action=AuditAction.ASSOCIATION, peer_ae="MODALITY")
    assert entry.outcome == Outcome.ALLOWED
    assert entry.ip == "127.0.0.1"


def test_storescu_stores_every_file_of_a_study_byte_for_byte(
    portal, modality, ct_study, dicom_storage
):
    study_uid, paths = ct_study
    result = storescu(portal, *map(str, paths))
    assert result.returncode == 0, result.stderr
    assert Instance.objects.count() == len(paths)
    for path in paths:
        instance = Instance.objects.get(sop_instance_uid=_sop_uid(path))
        assert dataset_bytes(dicom_storage / instance.blob_key) == dataset_bytes(path)
        assert instance.source == "cstore:MODALITY"
        assert instance.series.study.study_instance_uid == study_uid


def test_a_stored_study_is_on_the_record_once_per_index_batch_listing_each_instance_once(
    portal, modality, ct_study,
):
    """Each batch of index rows is committed with its STORE entry (one per study); the
    listener batches what queues up, so a series is one entry or a few."""
    study_uid, paths = ct_study
    storescu(portal, *map(str, paths))
    entries = list(AuditEvent.objects.filter(action=AuditAction.STORE))
    assert 1 <= len(entries) <= len(paths)
    for entry in entries:
        assert (entry.peer_ae, entry.outcome, entry.study_uid) == (
            "MODALITY", Outcome.ALLOWED, study_uid)
        assert entry.patient_ref.startswith("PAULA-001")
        assert entry.detail["via"] == "C-STORE"
        assert entry.detail["instances"] == len(entry.detail["stored"])
    assert sorted(uid for e in entries for uid in e.detail["stored"]) == sorted(
        _sop_uid(p) for p in paths)


def test_sending_a_study_again_succeeds_and_stores_nothing_new(
    portal, modality, ct_study, dicom_storage
):
    _, paths = ct_study
    storescu(portal, *map(str, paths))
    blobs_before = sorted(p for p in dicom_storage.rglob("*") if p.is_file())
    again = storescu(portal, *map(str, paths))
    assert again.returncode == 0, again.stderr
    assert "Success" in again.stderr
    assert Instance.objects.count() == len(paths)
    assert sorted(p for p in dicom_storage.rglob("*") if p.is_file()) == blobs_before


@pytest.mark.parametrize(
    ("filename", "propose"),
    [
        ("MR_small_implicit.dcm", "-xi"),
        ("MR_small_bigendian.dcm", "-xb"),
        ("image_dfl.dcm", "-xd"),
        ("SC_rgb_jpeg_dcmtk.dcm", "-xy"),  # JPEG baseline
        ("JPEG-lossy.dcm", "-xx"),  # JPEG extended (12 bit)
        ("SC_rgb_jpeg_gdcm.dcm", "-xs"),  # JPEG lossless, first-order prediction
        ("MR_small_jpeg_ls_lossless.dcm", "-xt"),  # JPEG-LS lossless
        ("MR_small_jp2klossless.dcm", "-xv"),  # JPEG 2000 lossless
        ("JPEG2000.dcm", "-xw"),  # JPEG 2000
        ("MR_small_RLE.dcm", "-xr"),  # RLE lossless
    ],
)
def test_each_common_transfer_syntax_is_stored_as_received(
    portal, modality, dicom_storage, tmp_path, filename, propose
):
    """storescu re-encodes some files as it sends them (VRs, lengths, padding), so "as
    received" is checked against DCMTK's own storescp writing bit for bit what it got."""
    path = Path(str(get_testdata_file(filename)))
    sent_syntax = str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    result = storescu(portal, propose, str(path))
    assert result.returncode == 0, result.stderr
    instance = Instance.objects.get(sop_instance_uid=_sop_uid(path))
    assert instance.transfer_syntax_uid == sent_syntax

    with storescp(tmp_path / "reference", ae_title="REFERENCE") as port:
        dcmtk("storescu", "-aet", "MODALITY", "-aec", "REFERENCE", propose, "127.0.0.1",
              str(port), str(path))
    [received] = (tmp_path / "reference").iterdir()
    assert dataset_bytes(dicom_storage / instance.blob_key) == dataset_bytes(received)


def test_a_peer_without_permission_to_store_is_refused_and_nothing_is_kept(
    portal, ct_study, dicom_storage
):
    Peer.objects.create(ae_title="VIEWER", host="127.0.0.1", may_query=True)
    _, paths = ct_study
    result = storescu(portal, str(paths[0]), aet="VIEWER")
    assert "0x124" in result.stderr  # Refused: Not Authorised (PS3.7 C)
    assert not Instance.objects.exists()
    assert not [p for p in dicom_storage.rglob("*") if p.is_file()]
    entry = AuditEvent.objects.get(action=AuditAction.STORE)
    assert (entry.peer_ae, entry.outcome) == ("VIEWER", Outcome.DENIED)


def test_several_associations_are_served_at_once(portal, modality):
    """An association that stays open does not hold up the next peer."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context("1.2.840.10008.1.1")
    first = ae.associate(portal.host, portal.port, ae_title=portal.ae_title)
    try:
        assert first.is_established
        result = dcmtk("echoscu", "-aet", "MODALITY", "-aec", "PORTAL", *portal.address(),
                       timeout=10)
        assert result.returncode == 0, result.stderr
        assert first.send_c_echo().Status == 0
    finally:
        first.release()


def test_a_peer_that_closes_the_connection_right_after_its_release_is_not_aborted(
    portal, modality, monkeypatch: pytest.MonkeyPatch,
):
    """The network thread may see the connection close before the association's own
    thread has marked it released; that is still a release, not an abort."""
    from pynetdicom.acse import ACSE

    answer = ACSE.send_release

    def answer_then_dawdle(self: ACSE, is_response: bool = False) -> None:
        answer(self, is_response)
        if is_response:
            time.sleep(0.3)  # echoscu has its answer and closes meanwhile

    monkeypatch.setattr(ACSE, "send_release", answer_then_dawdle)
    result = dcmtk("echoscu", "-aet", "MODALITY", "-aec", "PORTAL", *portal.address())
    assert result.returncode == 0, result.stderr
    portal.wait_idle()
    outcomes = list(AuditEvent.objects.filter(action=AuditAction.ASSOCIATION,
                                              peer_ae="MODALITY").values_list("outcome",
                                                                              flat=True))
    assert outcomes == [Outcome.ALLOWED]
