"""The transfer syntax of WADO-RS instances when the client names none.

PS3.18 makes Explicit VR Little Endian the default for ``application/dicom``: a JPEG-LS
object asked for without ``transfer-syntax`` comes back decompressed losslessly (a
transcoded copy; the stored blob is never changed), while ``transfer-syntax=*`` (what
dicomweb-client and OHIF send) keeps the stored encoding byte for byte.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless

from imaging import blobs
from imaging.models import Instance
from tests.http_bodies import body
from tests.wado_support import parse_multipart, pydicom_file, store

pytestmark = pytest.mark.django_db

DICOM_PARTS = 'multipart/related; type="application/dicom"'


def _jpeg_ls(client: Any, alice: Any) -> tuple[Path, Dataset]:
    path = pydicom_file("MR_small_jpeg_ls_lossless.dcm")
    store([path])
    client.force_login(alice)
    return path, dcmread(path)


def _url(ds: Dataset, level: str) -> str:
    url = f"/dicomweb/studies/{ds.StudyInstanceUID}"
    if level in ("series", "instance"):
        url += f"/series/{ds.SeriesInstanceUID}"
    if level == "instance":
        url += f"/instances/{ds.SOPInstanceUID}"
    return url


def _parts(response: Any) -> list[tuple[dict[str, str], bytes]]:
    assert response.status_code == 200, response
    # Whole objects are streamed; a single frame is one small body.
    assert response.streaming or "/frames/" in response.request["PATH_INFO"]
    return parse_multipart(response["Content-Type"], body(response))


@pytest.mark.parametrize("level", ["study", "series", "instance"])
def test_without_a_transfer_syntax_a_jpeg_ls_object_comes_back_explicit_little_endian(
    client, alice, level,
):
    path, original = _jpeg_ls(client, alice)
    assert original.file_meta.TransferSyntaxUID == JPEGLSLossless
    [(headers, payload)] = _parts(client.get(_url(original, level), HTTP_ACCEPT=DICOM_PARTS))
    assert headers["content-type"] == (
        f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}")
    received = dcmread(io.BytesIO(payload))
    assert received.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert received.SOPInstanceUID == original.SOPInstanceUID
    assert np.array_equal(received.pixel_array, dcmread(path).pixel_array)


def test_no_accept_header_means_the_default_transfer_syntax_too(client, alice):
    _, original = _jpeg_ls(client, alice)
    [(headers, _)] = _parts(client.get(_url(original, "instance")))
    assert headers["content-type"].endswith(ExplicitVRLittleEndian)


@pytest.mark.parametrize("level", ["study", "instance"])
def test_any_transfer_syntax_gives_the_stored_bytes_unchanged(client, alice, level):
    _, original = _jpeg_ls(client, alice)
    accept = f"{DICOM_PARTS}; transfer-syntax=*"
    [(headers, payload)] = _parts(client.get(_url(original, level), HTTP_ACCEPT=accept))
    assert headers["content-type"] == f"application/dicom; transfer-syntax={JPEGLSLossless}"
    stored = Instance.objects.get(sop_instance_uid=original.SOPInstanceUID)
    assert hashlib.sha256(payload).hexdigest() == stored.sha256


def test_the_stored_blob_is_not_changed_by_a_default_request(client, alice):
    _, original = _jpeg_ls(client, alice)
    stored = Instance.objects.get(sop_instance_uid=original.SOPInstanceUID)
    _parts(client.get(_url(original, "instance"), HTTP_ACCEPT=DICOM_PARTS))
    with blobs.open_blob(stored.blob_key) as fp:
        assert hashlib.sha256(fp.read()).hexdigest() == stored.sha256
        fp.seek(0)
        assert dcmread(fp).file_meta.TransferSyntaxUID == JPEGLSLossless


def test_frames_and_rendered_images_of_a_jpeg_ls_object_still_work(client, alice):
    path, original = _jpeg_ls(client, alice)
    base = _url(original, "instance")
    ohif = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
    [(headers, _)] = _parts(client.get(f"{base}/frames/1", HTTP_ACCEPT=ohif))
    assert headers["content-type"].endswith(JPEGLSLossless)
    octet = 'multipart/related; type="application/octet-stream"'
    [(headers, frame)] = _parts(client.get(f"{base}/frames/1", HTTP_ACCEPT=octet))
    assert headers["content-type"].endswith(ExplicitVRLittleEndian)
    assert frame == dcmread(path).pixel_array.tobytes()
    rendered = client.get(f"{base}/rendered", HTTP_ACCEPT="image/png")
    assert rendered.status_code == 200
    assert rendered["Content-Type"] == "image/png"


def test_an_implicit_vr_object_comes_back_explicit_with_the_same_values(client, alice):
    path = pydicom_file("rtdose.dcm")  # Implicit VR Little Endian, 15 frames
    store([path])
    client.force_login(alice)
    original = dcmread(path)
    [(headers, payload)] = _parts(client.get(_url(original, "instance"),
                                             HTTP_ACCEPT=DICOM_PARTS))
    assert headers["content-type"].endswith(ExplicitVRLittleEndian)
    received = dcmread(io.BytesIO(payload))
    assert received.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert received.PixelData == original.PixelData
    assert received.DoseGridScaling == original.DoseGridScaling


def test_an_object_no_codec_can_decode_is_sent_as_stored_when_no_syntax_was_asked(
    client, alice, tmp_path,
):
    from pydicom.encaps import encapsulate

    ds = dcmread(pydicom_file("MR_small_jpeg_ls_lossless.dcm"))
    ds.PixelData = encapsulate([b"\xff\xd8 not a JPEG-LS bitstream \xff\xd9"])
    path = tmp_path / "broken.dcm"
    ds.save_as(path, enforce_file_format=True)
    store([path])
    client.force_login(alice)
    url = _url(ds, "instance")
    [(headers, payload)] = _parts(client.get(url, HTTP_ACCEPT=DICOM_PARTS))
    assert headers["content-type"].endswith(JPEGLSLossless)
    assert payload == path.read_bytes()
    asked = f"{DICOM_PARTS}; transfer-syntax={ExplicitVRLittleEndian}"
    assert client.get(url, HTTP_ACCEPT=asked).status_code == 406
