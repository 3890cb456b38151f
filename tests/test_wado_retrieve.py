"""WADO-RS retrieval of studies, series and instances as multipart/related application/dicom.

Instances come back byte for byte as stored, through a real HTTP server and the
dicomweb-client library; outsiders get 404 and their attempt is on the audit trail; a
transfer syntax that is asked for is honoured by transcoding, or refused with 406.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLSLossless

from audit.models import AuditAction, AuditEvent
from imaging.models import Instance
from tests import wado_support
from tests.wado_support import parse_multipart, pydicom_file, session_for, store

paula_study = wado_support.paula_study
charlie_study = wado_support.charlie_study

pytestmark = pytest.mark.django_db(transaction=True)

DICOM_PARTS = 'multipart/related; type="application/dicom"'


def _client(live_server, user) -> DICOMwebClient:
    return DICOMwebClient(url=f"{live_server.url}/dicomweb", session=session_for(user))


def _get(live_server, user, path: str, accept: str | None = DICOM_PARTS) -> requests.Response:
    headers = {"Accept": accept} if accept is not None else {}
    return session_for(user).get(f"{live_server.url}/dicomweb/{path}", headers=headers,
                                 timeout=60)


def _series_and_instances(study_uid: str) -> list[tuple[str, str]]:
    return list(Instance.objects.filter(series__study__study_instance_uid=study_uid)
                .order_by("series__series_number", "instance_number")
                .values_list("series__series_instance_uid", "sop_instance_uid"))


def test_a_study_comes_back_byte_for_byte_in_viewing_order(live_server, paula_study, paula):
    study_uid, paths = paula_study
    originals = {dcmread(p, stop_before_pixels=True).SOPInstanceUID: p.read_bytes()
                 for p in paths}
    response = _get(live_server, paula, f"studies/{study_uid}")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith(DICOM_PARTS)
    assert int(response.headers["Content-Length"]) == len(response.content)
    parts = parse_multipart(response.headers["Content-Type"], response.content)
    assert len(parts) == len(paths)
    order = []
    for headers, payload in parts:
        assert headers["content-type"] == (
            f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}")
        uid = dcmread(io.BytesIO(payload), stop_before_pixels=True).SOPInstanceUID
        assert payload == originals[uid]
        order.append(uid)
    assert order == [sop for _, sop in _series_and_instances(study_uid)]


def test_dicomweb_client_retrieves_study_series_and_instance(live_server, paula_study, paula):
    study_uid, paths = paula_study
    client = _client(live_server, paula)
    datasets = client.retrieve_study(study_uid)
    assert len(datasets) == len(paths)
    series_uid, sop_uid = _series_and_instances(study_uid)[0]
    series = client.retrieve_series(study_uid, series_uid)
    assert len(series) == len(paths) // 2
    assert {ds.SeriesInstanceUID for ds in series} == {series_uid}
    one = client.retrieve_instance(study_uid, series_uid, sop_uid)
    original = next(p for p in paths if dcmread(p).SOPInstanceUID == sop_uid)
    assert np.array_equal(one.pixel_array, dcmread(original).pixel_array)


def test_the_study_streams_with_basic_authentication_too(live_server, paula_study, paula):
    from tests.conftest import PASSWORD

    study_uid, paths = paula_study
    response = requests.get(f"{live_server.url}/dicomweb/studies/{study_uid}",
                            headers={"Accept": DICOM_PARTS}, auth=("paula", PASSWORD), timeout=30)
    assert response.status_code == 200
    assert len(parse_multipart(response.headers["Content-Type"], response.content)) == len(
        paths)


def test_no_credentials_is_401(live_server, paula_study):
    study_uid, _ = paula_study
    response = requests.get(f"{live_server.url}/dicomweb/studies/{study_uid}", timeout=30)
    assert response.status_code == 401


def test_an_unknown_uid_is_404(live_server, paula_study, paula):
    assert _get(live_server, paula, "studies/1.2.3.4.5.6.7").status_code == 404


def test_charlie_gets_404_for_paulas_study_and_the_attempt_is_audited(
    live_server, paula_study, charlie_study, charlie,
):
    study_uid, _ = paula_study
    response = _get(live_server, charlie, f"studies/{study_uid}")
    assert response.status_code == 404
    assert b"application/dicom" not in response.content
    denied = AuditEvent.objects.filter(action=AuditAction.RETRIEVE, object_uid=study_uid,
                                       username="charlie")
    assert denied.count() == 1
    assert denied.get().outcome == "denied"


def test_charlie_gets_his_own_study(live_server, charlie_study, charlie):
    study_uid, _ = charlie_study
    response = _get(live_server, charlie, f"studies/{study_uid}")
    assert response.status_code == 200
    allowed = AuditEvent.objects.get(action=AuditAction.RETRIEVE, object_uid=study_uid)
    assert allowed.outcome == "allowed"


def test_a_series_under_another_study_is_404(live_server, paula_study, charlie_study, alice):
    paula_uid, _ = paula_study
    charlie_uid, _ = charlie_study
    series_uid, sop_uid = _series_and_instances(charlie_uid)[0]
    assert _get(live_server, alice, f"studies/{paula_uid}/series/{series_uid}").status_code == 404
    other_series, _ = _series_and_instances(paula_uid)[0]
    path = f"studies/{paula_uid}/series/{other_series}/instances/{sop_uid}"
    assert _get(live_server, alice, path).status_code == 404
    path = f"studies/{charlie_uid}/series/{series_uid}/instances/{sop_uid}"
    assert _get(live_server, alice, path).status_code == 200


def test_an_image_type_is_406_with_a_reason(live_server, paula_study, paula):
    study_uid, _ = paula_study
    response = _get(live_server, paula, f"studies/{study_uid}", accept="image/gif")
    assert response.status_code == 406
    assert "application/dicom" in response.json()["error"]


def test_no_accept_header_and_star_star_give_the_stored_objects(
    live_server, paula_study, paula,
):
    study_uid, paths = paula_study
    for accept in (None, "*/*", "multipart/related", f"{DICOM_PARTS}; transfer-syntax=*"):
        response = _get(live_server, paula, f"studies/{study_uid}", accept=accept)
        assert response.status_code == 200, accept
        parts = parse_multipart(response.headers["Content-Type"], response.content)
        assert sorted(p for _, p in parts) == sorted(p.read_bytes() for p in paths)


def test_an_unsupported_transfer_syntax_is_406(live_server, paula_study, paula):
    study_uid, _ = paula_study
    accept = f"{DICOM_PARTS}; transfer-syntax=1.2.840.10008.1.2.4.50"  # lossy JPEG
    assert _get(live_server, paula, f"studies/{study_uid}", accept=accept).status_code == 406


def _instance_path(study_uid: str) -> str:
    series_uid, sop_uid = _series_and_instances(study_uid)[0]
    return f"studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"


@pytest.mark.parametrize("name", ["MR_small_jp2klossless.dcm", "MR_small_RLE.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm"])
def test_compressed_files_transcode_to_explicit_little_endian(live_server, alice, name):
    path = pydicom_file(name)
    store([path])
    original = dcmread(path)
    accept = f"{DICOM_PARTS}; transfer-syntax={ExplicitVRLittleEndian}"
    response = _get(live_server, alice, _instance_path(original.StudyInstanceUID), accept)
    assert response.status_code == 200
    [(headers, payload)] = parse_multipart(response.headers["Content-Type"], response.content)
    assert headers["content-type"] == (
        f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}")
    received = dcmread(io.BytesIO(payload))
    assert received.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert received.SOPInstanceUID == original.SOPInstanceUID
    assert np.array_equal(received.pixel_array, original.pixel_array)


@pytest.mark.parametrize("target", [JPEGLSLossless, "1.2.840.10008.1.2.5",
                                    "1.2.840.10008.1.2.4.90", ImplicitVRLittleEndian])
def test_native_files_transcode_losslessly_on_request(live_server, paula_study, paula, target):
    study_uid, paths = paula_study
    accept = f"{DICOM_PARTS}; transfer-syntax={target}"
    response = _get(live_server, paula, _instance_path(study_uid), accept)
    assert response.status_code == 200
    [(_, payload)] = parse_multipart(response.headers["Content-Type"], response.content)
    received = dcmread(io.BytesIO(payload))
    assert received.file_meta.TransferSyntaxUID == target
    original = next(p for p in paths if dcmread(p).SOPInstanceUID == received.SOPInstanceUID)
    assert np.array_equal(received.pixel_array, dcmread(original).pixel_array)


def test_a_study_transcodes_instance_by_instance(live_server, paula_study, paula):
    study_uid, paths = paula_study
    accept = f"{DICOM_PARTS}; transfer-syntax={JPEGLSLossless}"
    response = _get(live_server, paula, f"studies/{study_uid}", accept)
    parts = parse_multipart(response.headers["Content-Type"], response.content)
    assert len(parts) == len(paths)
    assert all(h["content-type"].endswith(JPEGLSLossless) for h, _ in parts)


def test_the_stored_syntax_is_preferred_when_the_client_lists_several(
    live_server, paula_study, paula,
):
    study_uid, paths = paula_study
    accept = (f"{DICOM_PARTS}; transfer-syntax={JPEGLSLossless}; q=0.5, "
              f"{DICOM_PARTS}; transfer-syntax={ExplicitVRLittleEndian}")
    response = _get(live_server, paula, f"studies/{study_uid}", accept)
    parts = parse_multipart(response.headers["Content-Type"], response.content)
    assert sorted(p for _, p in parts) == sorted(p.read_bytes() for p in paths)


def test_a_bare_dataset_is_served_as_a_part10_file(live_server, alice, tmp_path):
    """A C-STORE body has no File Meta; application/dicom parts must be Part 10 files."""
    from pydicom.filewriter import write_dataset

    source = dcmread(pydicom_file("CT_small.dcm"))
    bare = tmp_path / "bare.dcm"
    with bare.open("wb") as fp:
        from pydicom.filebase import DicomFileLike

        out = DicomFileLike(fp)
        out.is_little_endian, out.is_implicit_VR = True, True
        write_dataset(out, source)
    store([bare])
    instance = Instance.objects.get(sop_instance_uid=source.SOPInstanceUID)
    assert not instance.has_file_meta
    # transfer-syntax=*: as stored (without it, the default Explicit VR Little Endian).
    response = _get(live_server, alice, _instance_path(source.StudyInstanceUID),
                    f"{DICOM_PARTS}; transfer-syntax=*")
    [(headers, payload)] = parse_multipart(response.headers["Content-Type"], response.content)
    assert payload[128:132] == b"DICM"
    assert payload.endswith(bare.read_bytes())
    received = dcmread(io.BytesIO(payload))
    assert received.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert received.file_meta.MediaStorageSOPInstanceUID == source.SOPInstanceUID
    assert headers["content-type"] == (
        f"application/dicom; transfer-syntax={ImplicitVRLittleEndian}")
