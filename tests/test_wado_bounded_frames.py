"""WADO-RS frames and bulk data never hold a whole object in memory.

A frame list names each frame once and no more frames than the instance has (400 with a
reason otherwise, before any pixel is read); frames are streamed one at a time; bulk data
is read from the stored file by offset, so a large value next to a larger Pixel Data
costs its own size, never the file's.
"""

from __future__ import annotations

import datetime
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from imaging.synthetic import PatientSpec, SeriesSpec, series_datasets
from tests.wado_support import parse_multipart, store

pytestmark = pytest.mark.django_db

FRAMES = 48
SIZE = 256  # 128 KiB a frame, 6 MiB of pixel data
FRAME_BYTES = SIZE * SIZE * 2
OCTET_PARTS = 'multipart/related; type="application/octet-stream"'
PATIENT = PatientSpec("BIG-001", "Grande^Gil", datetime.date(1960, 1, 1), "M")


@pytest.fixture
def multiframe(tmp_path: Path, client, alice):
    """A native 48-frame object with a 4 MiB overlay, stored; alice signed in."""
    [ds] = series_datasets(PATIENT, SeriesSpec("CT", 1, size=SIZE), study_uid="1.2.826.0.1.9",
                           study_date=datetime.date(2026, 1, 5), accession="BIG1",
                           study_description="multiframe", series_number=1)
    ds.NumberOfFrames = FRAMES
    frames = np.arange(FRAMES * SIZE * SIZE, dtype=np.int16).reshape(FRAMES, SIZE, SIZE)
    ds.PixelData = frames.tobytes()
    ds.add_new(0x60000010, "US", 8192)  # Overlay Rows
    ds.add_new(0x60000011, "US", 4096)  # Overlay Columns
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", bytes(range(256)) * (16 * 1024))  # Overlay Data, 4 MiB
    path = tmp_path / "multiframe.dcm"
    ds.save_as(path, enforce_file_format=True)
    store([path])
    client.force_login(alice)
    return ds


def _base(ds) -> str:
    return (f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}")


def _get_with_peak(client, url: str, accept: str) -> tuple[int, int]:
    """Bytes of the body and the peak of memory allocated while the request was answered
    and its streamed body consumed (and dropped) chunk by chunk."""
    tracemalloc.start()
    try:
        response = client.get(url, HTTP_ACCEPT=accept)
        assert response.status_code == 200
        assert response.streaming
        total = sum(len(chunk) for chunk in response.streaming_content)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return total, peak


def test_a_frame_asked_for_twice_is_400_with_a_reason(client, multiframe):
    response = client.get(f"{_base(multiframe)}/frames/1,2,1", HTTP_ACCEPT=OCTET_PARTS)
    assert response.status_code == 400
    assert "1" in response.json()["error"]
    assert "more than once" in response.json()["error"]


def test_the_same_frame_hundreds_of_times_is_refused_before_reading_pixels(client, multiframe):
    response = client.get(f"{_base(multiframe)}/frames/{','.join(['3'] * 500)}",
                          HTTP_ACCEPT=OCTET_PARTS)
    assert response.status_code == 400


def test_more_frames_than_the_instance_has_is_400_with_a_reason(client, multiframe):
    numbers = ",".join(str(n) for n in range(1, FRAMES + 2))
    response = client.get(f"{_base(multiframe)}/frames/{numbers}", HTTP_ACCEPT=OCTET_PARTS)
    assert response.status_code == 400
    assert f"{FRAMES} frames" in response.json()["error"]


def test_every_frame_at_once_streams_one_frame_at_a_time(client, multiframe):
    numbers = ",".join(str(n) for n in range(1, FRAMES + 1))
    total, peak = _get_with_peak(client, f"{_base(multiframe)}/frames/{numbers}", OCTET_PARTS)
    assert total > FRAMES * FRAME_BYTES
    assert peak < 4 * FRAME_BYTES  # the whole pixel data is 48 frames


def test_streamed_frames_are_the_right_slices(client, multiframe):
    response = client.get(f"{_base(multiframe)}/frames/48,1,7", HTTP_ACCEPT=OCTET_PARTS)
    parts = parse_multipart(response["Content-Type"], b"".join(response.streaming_content))
    pixels = multiframe.PixelData
    assert [p for _, p in parts] == [pixels[(n - 1) * FRAME_BYTES:n * FRAME_BYTES]
                                     for n in (48, 1, 7)]


def test_bulk_data_beside_a_large_pixel_data_is_read_by_offset(client, multiframe):
    url = f"{_base(multiframe)}/bulkdata/60003000"
    total, peak = _get_with_peak(client, url, "application/octet-stream")
    overlay = len(multiframe[0x60003000].value)
    assert total == overlay
    assert peak < overlay  # neither the file (10 MiB) nor even the whole value at once
    again = client.get(url, HTTP_ACCEPT="application/octet-stream")
    assert b"".join(again.streaming_content) == multiframe[0x60003000].value


def test_encapsulated_pixel_data_as_bulk_data_streams_frame_by_frame(client, alice):
    from pydicom.encaps import generate_frames

    from tests.wado_support import pydicom_file

    path = pydicom_file("examples_ybr_color.dcm")  # 30 JPEG frames
    store([path])
    client.force_login(alice)
    ds = dcmread(path)
    response = client.get(f"{_base(ds)}/bulkdata/7fe00010", HTTP_ACCEPT=OCTET_PARTS)
    assert response.status_code == 200
    parts = parse_multipart(response["Content-Type"], b"".join(response.streaming_content))
    assert [p for _, p in parts] == list(generate_frames(ds.PixelData, number_of_frames=30))


def test_bit_packed_frames_off_byte_boundaries_are_sliced_by_offset(client, alice, tmp_path):
    """Three 5x5 one-bit frames: 75 bits in 10 bytes, frames 2 and 3 start mid-byte."""
    [ds] = series_datasets(PATIENT, SeriesSpec("CT", 1, size=5), study_uid="1.2.826.0.1.10",
                           study_date=datetime.date(2026, 1, 5), accession="BITS1",
                           study_description="bits", series_number=1)
    ds.NumberOfFrames = 3
    ds.BitsAllocated = ds.BitsStored = 1
    ds.HighBit = 0
    ds.PixelRepresentation = 0
    frames = np.random.default_rng(3).integers(0, 2, (3, 5, 5), dtype=np.uint8)
    ds.PixelData = np.packbits(frames.ravel(), bitorder="little").tobytes()
    for name in ("RescaleIntercept", "RescaleSlope", "RescaleType", "WindowCenter",
                 "WindowWidth"):
        delattr(ds, name)
    path = tmp_path / "bits.dcm"
    ds.save_as(path, enforce_file_format=True)
    store([path])
    client.force_login(alice)
    response = client.get(f"{_base(ds)}/frames/1,2,3", HTTP_ACCEPT=OCTET_PARTS)
    assert response.status_code == 200, response.content
    parts = parse_multipart(response["Content-Type"], b"".join(response.streaming_content))
    for (_, payload), frame in zip(parts, frames, strict=True):
        unpacked = np.unpackbits(np.frombuffer(payload, np.uint8), bitorder="little")
        assert np.array_equal(unpacked[:25].reshape(5, 5), frame)
