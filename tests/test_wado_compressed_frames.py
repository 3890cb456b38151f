"""Compressed frames for viewers on slow links (issue 13).

Frames stored uncompressed are given losslessly compressed to a client that asks: JPEG-LS
(``image/jls``), RLE (``image/dicom-rle``), JPEG 2000 lossless (``image/jp2``) or HTJ2K
lossless (``image/jphc``, plain or RPCL) by name, and JPEG-LS for ``transfer-syntax=*``
(what OHIF sends for every frame). Each compressed
frame decodes, with pydicom's own decoders, to exactly the stored pixels; the stored object
is never changed; an encoded frame is kept on disk so the next viewer gets it without an
encode; a frame the codec cannot represent is sent uncompressed, as before.
"""

from __future__ import annotations

import datetime
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from dicomweb import frame_codecs
from imaging import blobs
from imaging.models import Instance
from imaging.synthetic import PatientSpec, SeriesSpec, series_datasets
from tests.http_bodies import body
from tests.wado_support import parse_multipart, pydicom_file, store

pytestmark = pytest.mark.django_db

OHIF_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
NATIVE_ACCEPT = 'multipart/related; type="application/octet-stream"'
MEDIA = {JPEGLSLossless: "image/jls", RLELossless: "image/dicom-rle",
         JPEG2000Lossless: "image/jp2", HTJ2KLossless: "image/jphc",
         HTJ2KLosslessRPCL: "image/jphc"}
PATIENT = PatientSpec("SLOW-001", "Lenta^Lia", datetime.date(1970, 3, 4), "F")
SIZE = 64


def _synthetic(tmp_path: Path, name: str, *, modality: str = "CT", bits_allocated: int = 16,
               bits_stored: int = 16, signed: bool = False, samples: int = 1,
               frames: int = 1, seed: int = 0) -> Path:
    """A native object whose pixel values fill its whole Bits Stored range."""
    [ds] = series_datasets(PATIENT, SeriesSpec("CT", 1, size=SIZE),
                           study_uid=f"1.2.826.0.1.13.{seed}",
                           study_date=datetime.date(2026, 2, 1), accession=f"SL{seed}",
                           study_description=name, series_number=1)
    rng = np.random.default_rng(seed)
    low, high = ((-(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1) if signed
                 else (0, (1 << bits_stored) - 1))
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits_allocated // 8}")
    shape = (frames, SIZE, SIZE, samples)
    values = rng.integers(low, high, shape, endpoint=True).astype(dtype)
    values.flat[:2] = (low, high)
    ds.Modality = modality
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits_allocated, bits_stored, bits_stored - 1
    ds.PixelRepresentation = int(signed)
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = "RGB" if samples == 3 else "MONOCHROME2"
    if samples == 3:
        ds.PlanarConfiguration = 0
        for keyword in ("RescaleIntercept", "RescaleSlope", "RescaleType", "WindowCenter",
                        "WindowWidth"):
            if keyword in ds:
                delattr(ds, keyword)
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = values.tobytes()
    path = tmp_path / f"{name}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


KINDS: dict[str, dict[str, Any]] = {
    "ct-16-bit-signed": {"signed": True},
    "ct-16-bit-unsigned": {},
    "ct-12-bit": {"bits_stored": 12},
    "ct-12-bit-signed": {"bits_stored": 12, "signed": True},
    "us-rgb": {"modality": "US", "bits_allocated": 8, "bits_stored": 8, "samples": 3},
    "8-bit": {"modality": "OT", "bits_allocated": 8, "bits_stored": 8},
    "multi-frame": {"frames": 3, "signed": True},
}


@pytest.fixture(autouse=True)
def remote_site(settings) -> None:
    """The test client (127.0.0.1) counts as a remote site here: on the LAN, ``*`` gets
    frames as stored (tests/test_wado_frames_per_link.py)."""
    settings.WADO_FRAMES_LAN_NETWORKS = []


@pytest.fixture(params=sorted(KINDS))
def stored(request, tmp_path, client, alice) -> Dataset:
    """One native object of each kind, stored; alice signed in."""
    path = _synthetic(tmp_path, request.param, seed=sorted(KINDS).index(request.param),
                      **KINDS[request.param])
    store([path])
    client.force_login(alice)
    return dcmread(path)


@pytest.fixture
def mr(client, alice) -> Dataset:
    """pydicom's MR_small (16-bit signed, native), stored."""
    path = pydicom_file("MR_small.dcm")
    store([path])
    client.force_login(alice)
    return dcmread(path)


def _url(ds: Dataset, frames: str = "1") -> str:
    return (f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}/frames/{frames}")


def _get(client, ds: Dataset, accept: str, frames: str = "1") -> list[tuple[dict[str, str], bytes]]:
    response = client.get(_url(ds, frames), HTTP_ACCEPT=accept)
    assert response.status_code == 200, response.content
    return parse_multipart(response["Content-Type"], body(response))


def _decoded(ds: Dataset, syntax: str, bitstream: bytes) -> np.ndarray:
    """One frame's bitstream decoded by pydicom's decoder for ``syntax``."""
    options: dict[str, Any] = {
        "rows": ds.Rows, "columns": ds.Columns, "samples_per_pixel": ds.SamplesPerPixel,
        "bits_allocated": ds.BitsAllocated, "bits_stored": ds.BitsStored,
        "pixel_representation": ds.PixelRepresentation,
        "photometric_interpretation": ds.PhotometricInterpretation, "number_of_frames": 1,
        "planar_configuration": ds.get("PlanarConfiguration", 0)}
    array, _ = get_decoder(UID(syntax)).as_array(encapsulate([bitstream]), **options)
    return array


def _stored_frames(ds: Dataset) -> np.ndarray:
    arr = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return arr.reshape(frames, *arr.shape[-3:] if ds.SamplesPerPixel == 3 else arr.shape[-2:])


@pytest.mark.parametrize("syntax", sorted(MEDIA))
def test_each_lossless_syntax_asked_by_name_decodes_to_the_stored_pixels(client, stored,
                                                                        syntax):
    frames = _stored_frames(stored)
    numbers = ",".join(str(n) for n in range(1, len(frames) + 1))
    accept = f'multipart/related; type="{MEDIA[syntax]}"; transfer-syntax={syntax}'
    parts = _get(client, stored, accept, numbers)
    assert [h["content-type"] for h, _ in parts] == (
        [f"{MEDIA[syntax]}; transfer-syntax={syntax}"] * len(frames))
    for (_, bitstream), frame in zip(parts, frames, strict=True):
        assert np.array_equal(_decoded(stored, syntax, bitstream), frame)


def test_ohif_any_syntax_gets_jpeg_ls_that_decodes_to_the_stored_pixels(client, stored):
    frames = _stored_frames(stored)
    for number, frame in enumerate(frames, start=1):
        [(headers, bitstream)] = _get(client, stored, OHIF_ACCEPT, str(number))
        assert headers["content-type"] == f"image/jls; transfer-syntax={JPEGLSLossless}"
        assert np.array_equal(_decoded(stored, JPEGLSLossless, bitstream), frame)


def test_an_mr_frame_as_jpeg_ls_is_the_stored_frame(client, mr):
    [(headers, bitstream)] = _get(client, mr, OHIF_ACCEPT)
    assert headers["content-type"].endswith(JPEGLSLossless)
    assert np.array_equal(_decoded(mr, JPEGLSLossless, bitstream), mr.pixel_array)
    assert len(bitstream) < len(mr.PixelData) * 0.7  # a real image: what a slow link gains
    accept = 'multipart/related; type="image/jls"'  # the media type alone names JPEG-LS
    [(headers, again)] = _get(client, mr, accept)
    assert headers["content-type"] == f"image/jls; transfer-syntax={JPEGLSLossless}"
    assert again == bitstream


def test_one_frame_is_one_whole_body_with_its_length(client, mr):
    response = client.get(_url(mr), HTTP_ACCEPT=OHIF_ACCEPT)
    assert not response.streaming
    assert int(response["Content-Length"]) == len(response.content)
    assert response["Content-Type"].startswith('multipart/related; type="image/jls"')


def test_no_transfer_syntax_still_means_uncompressed(client, mr):
    [(headers, frame)] = _get(client, mr, NATIVE_ACCEPT)
    assert headers["content-type"] == (
        f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}")
    assert frame == mr.PixelData


def test_any_syntax_can_be_set_to_send_frames_as_stored(client, mr, settings):
    settings.WADO_FRAMES_ANY_SYNTAX = "stored"
    [(headers, frame)] = _get(client, mr, OHIF_ACCEPT)
    assert headers["content-type"] == (
        f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}")
    assert frame == mr.PixelData


@pytest.mark.parametrize("accept", [
    'multipart/related; type="image/jpeg"',  # lossy: never made from a diagnostic image
    f'multipart/related; type="image/jls"; transfer-syntax={UID("1.2.840.10008.1.2.4.81")}',
    f'multipart/related; type="image/jls"; transfer-syntax={RLELossless}',  # type mismatch
    # HTJ2K that may be lossy: the archive makes the lossless syntaxes only
    'multipart/related; type="image/jphc"; transfer-syntax=1.2.840.10008.1.2.4.203',
    f'multipart/related; type="image/jp2"; transfer-syntax={HTJ2KLossless}',  # mismatch
])
def test_a_syntax_that_is_not_offered_is_406(client, mr, accept):
    response = client.get(_url(mr), HTTP_ACCEPT=accept)
    assert response.status_code == 406
    assert "offers" in response.json()["error"]


def test_the_stored_object_is_never_changed(client, stored):
    instance = Instance.objects.get(sop_instance_uid=stored.SOPInstanceUID)
    for syntax in (JPEGLSLossless, RLELossless):
        _get(client, stored, f'multipart/related; type="{MEDIA[syntax]}"')
    _get(client, stored, OHIF_ACCEPT)
    with blobs.open_blob(instance.blob_key) as fp:
        assert hashlib.sha256(fp.read()).hexdigest() == instance.sha256
    assert Instance.objects.get(pk=instance.pk).transfer_syntax_uid == ExplicitVRLittleEndian


def test_a_second_viewer_gets_the_cached_frame_without_an_encode(client, mr, settings,
                                                                 monkeypatch):
    [(_, first)] = _get(client, mr, OHIF_ACCEPT)
    instance = Instance.objects.get(sop_instance_uid=mr.SOPInstanceUID)
    cached = frame_codecs.cache().path(instance.sha256, 1, JPEGLSLossless)
    assert cached.is_relative_to(Path(settings.WADO_FRAME_CACHE_DIR))
    assert cached.read_bytes() == first

    def no_encode(*args: object) -> bytes:
        raise AssertionError("encoded again")

    monkeypatch.setattr(frame_codecs, "encode", no_encode)
    [(headers, second)] = _get(client, mr, OHIF_ACCEPT)
    assert headers["content-type"].endswith(JPEGLSLossless)
    assert second == first


def test_a_frame_the_codec_cannot_represent_is_sent_as_before(client, alice, tmp_path):
    """Values above Bits Stored (bits in the unused high bits) would not survive a codec
    that codes only Bits Stored bits: that frame goes uncompressed, byte for byte."""
    path = _synthetic(tmp_path, "overlay-bits", bits_stored=12, seed=40)
    ds = dcmread(path)
    raw = bytearray(ds.PixelData)
    raw[0:2] = (0xF000 | 7).to_bytes(2, "little")
    ds.PixelData = bytes(raw)
    ds.save_as(path, enforce_file_format=True)
    store([path])
    client.force_login(alice)
    for accept in (OHIF_ACCEPT, 'multipart/related; type="image/jls"',
                   'multipart/related; type="image/jphc"'):
        [(headers, frame)] = _get(client, ds, accept)
        assert headers["content-type"] == (
            f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}")
        assert frame == bytes(raw)


def test_the_cache_keeps_to_its_size_by_dropping_the_oldest(tmp_path):
    cache = frame_codecs.FrameCache(tmp_path / "cache", limit=10_000)
    for frame in range(1, 31):
        cache.put("ab" * 32, frame, JPEGLSLossless, bytes(1000))
    cache.evict()
    kept = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "cache").rglob("*-*-*"))
    assert sum(p.stat().st_size for p in (tmp_path / "cache").rglob("*-*-*")) <= 10_000
    assert kept and kept[-1] == 30  # the newest stay
    assert not list((tmp_path / "cache").rglob(".*"))  # no temporary file left behind


def test_a_deleted_objects_frames_leave_the_cache(client, mr, settings,
                                                 django_capture_on_commit_callbacks):
    _get(client, mr, OHIF_ACCEPT)
    instance = Instance.objects.get(sop_instance_uid=mr.SOPInstanceUID)
    cached = frame_codecs.cache().path(instance.sha256, 1, JPEGLSLossless)
    assert cached.is_file()
    with django_capture_on_commit_callbacks(execute=True):
        Instance.objects.filter(pk=instance.pk).delete()
    assert not cached.exists()


def test_an_image_no_frame_of_which_can_be_transcoded_is_406_when_asked_by_name(
        client, alice, tmp_path):
    """Colour planes stored one after another: the codecs give interleaved samples, so the
    metadata a viewer decodes with would be wrong. Asked by name: 406; for ``*``: as
    stored."""
    path = _synthetic(tmp_path, "planar", modality="US", bits_allocated=8, bits_stored=8,
                      samples=3, seed=41)
    ds = dcmread(path)
    ds.PlanarConfiguration = 1
    ds.save_as(path, enforce_file_format=True)
    store([path])
    client.force_login(alice)
    refused = client.get(_url(ds), HTTP_ACCEPT='multipart/related; type="image/jls"')
    assert refused.status_code == 406
    assert "colour planes" in refused.json()["error"]
    [(headers, frame)] = _get(client, ds, OHIF_ACCEPT)
    assert headers["content-type"] == (
        f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}")
    assert frame == ds.PixelData


def test_htj2k_by_media_type_alone_is_htj2k_lossless(client, mr):
    """image/jphc stands for three syntaxes; without ``transfer-syntax`` it is HTJ2K
    lossless, the one PS3.18 Table 8.7.3-5 makes the default."""
    [(headers, bitstream)] = _get(client, mr, 'multipart/related; type="image/jphc"')
    assert headers["content-type"] == f"image/jphc; transfer-syntax={HTJ2KLossless}"
    assert np.array_equal(_decoded(mr, HTJ2KLossless, bitstream), mr.pixel_array)
    assert len(bitstream) < len(mr.PixelData) * 0.7


def test_htj2k_named_with_octet_stream_is_given_as_htj2k(client, mr):
    """A client that names the syntax but not its media type gets the syntax, with the
    media type the part really has (as an object stored compressed is given as stored)."""
    accept = f'multipart/related; type="application/octet-stream"; transfer-syntax={HTJ2KLossless}'
    [(headers, bitstream)] = _get(client, mr, accept)
    assert headers["content-type"] == f"image/jphc; transfer-syntax={HTJ2KLossless}"
    assert np.array_equal(_decoded(mr, HTJ2KLossless, bitstream), mr.pixel_array)


def _main_header_markers(codestream: bytes) -> dict[int, bytes]:
    """The JPEG 2000 main header's marker segments (up to the first tile), by marker."""
    markers: dict[int, bytes] = {}
    position = 2  # after SOC
    while (marker := int.from_bytes(codestream[position:position + 2], "big")) != 0xFF90:
        length = int.from_bytes(codestream[position + 2:position + 4], "big")
        markers[marker] = codestream[position + 4:position + 2 + length]
        position += 2 + length
    return markers


def test_htj2k_rpcl_frames_are_what_ps3_5_asks_of_that_syntax(client, alice, tmp_path):
    """RPCL progression, tile-part length markers, and enough decompositions that the
    smallest resolution of a 300 x 700 frame is at most 64 pixels on a side."""
    [ds] = series_datasets(PATIENT, SeriesSpec("CT", 1, size=300),
                           study_uid="1.2.826.0.1.13.99", study_date=datetime.date(2026, 2, 1),
                           accession="SL99", study_description="rpcl", series_number=1)
    values = np.random.default_rng(99).integers(0, 1023, (300, 700), endpoint=True)
    ds.Columns, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 700, 10, 9, 0
    ds.PixelData = values.astype("<u2").tobytes()
    path = tmp_path / "rpcl.dcm"
    ds.save_as(path, enforce_file_format=True)
    store([path])
    client.force_login(alice)
    accept = f'multipart/related; type="image/jphc"; transfer-syntax={HTJ2KLosslessRPCL}'
    [(headers, bitstream)] = _get(client, ds, accept)
    assert headers["content-type"] == f"image/jphc; transfer-syntax={HTJ2KLosslessRPCL}"
    markers = _main_header_markers(bitstream)
    coding_style = markers[0xFF52]  # COD: Scod, progression order, layers, MCT, levels
    assert coding_style[1] == 2  # RPCL
    assert 700 / 2 ** coding_style[5] <= 64
    assert 0xFF55 in markers  # TLM
    assert np.array_equal(_decoded(ds, HTJ2KLosslessRPCL, bitstream), values)
