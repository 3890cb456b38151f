"""WADO-RS frames: native frames are the exact slice of the stored pixel data; compressed
frames come back in the stored transfer syntax when the client takes any (as OHIF asks),
decoded when it takes only uncompressed data; frames that do not exist are refused."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRLittleEndian

from tests import wado_support
from tests.http_bodies import body
from tests.wado_support import parse_multipart, pydicom_file, store

paula_study = wado_support.paula_study

pytestmark = pytest.mark.django_db

OHIF_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
OCTET_PARTS = 'multipart/related; type="application/octet-stream"'


def _frames(client, ds, frames: str, accept: str | None = OCTET_PARTS):
    url = (f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
           f"/instances/{ds.SOPInstanceUID}/frames/{frames}")
    headers = {"HTTP_ACCEPT": accept} if accept else {}
    return client.get(url, **headers)


def _parts(response: Any) -> list[tuple[dict[str, str], bytes]]:
    assert response.status_code == 200, response.content
    return parse_multipart(response["Content-Type"], body(response))


def _stored(name: str, client, alice):
    path = pydicom_file(name)
    store([path])
    client.force_login(alice)
    return dcmread(path)


def test_a_native_frame_is_the_pixel_data(client, paula_study, paula):
    _, paths = paula_study
    ds = dcmread(paths[0])
    client.force_login(paula)
    [(headers, payload)] = _parts(_frames(client, ds, "1"))
    assert headers["content-type"] == (
        f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}")
    assert payload == ds.PixelData


def test_frames_of_a_native_multiframe_file_are_slices(client, alice):
    ds = _stored("rtdose.dcm", client, alice)  # 15 frames, implicit VR, 32-bit
    size = ds.Rows * ds.Columns * ds.BitsAllocated // 8
    parts = _parts(_frames(client, ds, "1,3,15"))
    assert [p for _, p in parts] == [ds.PixelData[(n - 1) * size:n * size] for n in (1, 3, 15)]


def test_ohif_gets_the_stored_bitstream_of_a_compressed_frame(client, alice):
    ds = _stored("SC_rgb_rle_2frame.dcm", client, alice)
    stored = list(generate_frames(ds.PixelData, number_of_frames=2))
    parts = _parts(_frames(client, ds, "2", OHIF_ACCEPT))
    [(headers, payload)] = parts
    assert headers["content-type"] == "image/dicom-rle; transfer-syntax=1.2.840.10008.1.2.5"
    assert payload == stored[1]


@pytest.mark.parametrize("name", ["MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
                                  "JPEG2000.dcm", "SC_rgb_jpeg_gdcm.dcm"])
def test_ohif_gets_single_frame_bitstreams_byte_for_byte(client, alice, name):
    ds = _stored(name, client, alice)
    [stored] = list(generate_frames(ds.PixelData, number_of_frames=1))
    [(headers, payload)] = _parts(_frames(client, ds, "1", OHIF_ACCEPT))
    assert headers["content-type"].endswith(f"transfer-syntax={ds.file_meta.TransferSyntaxUID}")
    assert payload == stored


def test_a_multiframe_jpeg_frame_by_frame(client, alice):
    ds = _stored("examples_ybr_color.dcm", client, alice)  # 30 JPEG baseline frames
    stored = list(generate_frames(ds.PixelData, number_of_frames=30))
    parts = _parts(_frames(client, ds, "1,30", OHIF_ACCEPT))
    assert [h["content-type"] for h, _ in parts] == [
        "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"] * 2
    assert [p for _, p in parts] == [stored[0], stored[29]]


def test_only_uncompressed_accepted_means_decoded_frames(client, alice):
    ds = _stored("MR_small_jp2klossless.dcm", client, alice)
    [(headers, payload)] = _parts(_frames(client, ds, "1"))
    assert headers["content-type"] == (
        f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}")
    decoded = np.frombuffer(payload, dtype=ds.pixel_array.dtype).reshape(ds.Rows, ds.Columns)
    assert np.array_equal(decoded, ds.pixel_array)


def test_asking_for_the_stored_media_type_gives_the_bitstream(client, alice):
    ds = _stored("MR_small_jpeg_ls_lossless.dcm", client, alice)
    [stored] = list(generate_frames(ds.PixelData, number_of_frames=1))
    [(headers, payload)] = _parts(_frames(client, ds, "1", 'multipart/related; type="image/jls"'))
    assert headers["content-type"].startswith("image/jls")
    assert payload == stored


def test_another_compressed_type_is_406(client, alice):
    ds = _stored("MR_small_jpeg_ls_lossless.dcm", client, alice)
    response = _frames(client, ds, "1", 'multipart/related; type="image/jp2"')
    assert response.status_code == 406


def test_a_frame_beyond_the_last_is_400_with_a_reason(client, paula_study, paula):
    _, paths = paula_study
    client.force_login(paula)
    response = _frames(client, dcmread(paths[0]), "2")
    assert response.status_code == 400
    assert "1 frame" in response.json()["error"]


@pytest.mark.parametrize("frames", ["0", "a", "1,,2", "-1"])
def test_a_malformed_frame_list_is_400(client, paula_study, paula, frames):
    _, paths = paula_study
    client.force_login(paula)
    assert _frames(client, dcmread(paths[0]), frames).status_code == 400


def test_charlie_gets_404_for_paulas_frames(client, paula_study, charlie):
    _, paths = paula_study
    client.force_login(charlie)
    assert _frames(client, dcmread(paths[0]), "1").status_code == 404


def test_a_bare_dataset_frame_is_found_by_offset(client, alice, tmp_path):
    from pydicom.filebase import DicomFileLike
    from pydicom.filewriter import write_dataset

    ds = dcmread(pydicom_file("CT_small.dcm"))
    bare = tmp_path / "bare.dcm"
    with bare.open("wb") as fp:
        out = DicomFileLike(fp)
        out.is_little_endian, out.is_implicit_VR = True, True
        write_dataset(out, ds)
    store([bare])
    client.force_login(alice)
    [(_, payload)] = _parts(_frames(client, ds, "1"))
    assert payload == ds.PixelData
