"""Packing gives back exactly the original bytes (same SHA-256), and is smaller.

Native pixel data goes to lossless JPEG-LS frame by frame, everything else to zstandard;
what the codec cannot represent exactly falls back to zstandard; a damaged packed object is
refused with a clear error, never read as wrong bytes; and a codec that does not round-trip
is caught by the self-verification, which then keeps the original.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import zstandard
from pydicom.data import get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSLossless,
    MRImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

from imaging import packing
from imaging.packing import CorruptPacked, Unpacker, pack_verified, unpack
from imaging.synthetic import phantom


def _pack(data: bytes) -> tuple[bytes, packing.Packed]:
    out = io.BytesIO()
    packed = pack_verified(io.BytesIO(data), out)
    assert packed is not None
    return out.getvalue(), packed


def _unpack(data: bytes) -> bytes:
    out = io.BytesIO()
    unpack(io.BytesIO(data), out)
    return out.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _object(pixels: bytes, *, rows: int, columns: int, allocated: int, stored: int,
            signed: bool = False, samples: int = 1, planar: int = 0, frames: int = 1,
            syntax: str = ExplicitVRLittleEndian, modality: str = "CT",
            photometric: str | None = None, sop_class: str = CTImageStorage) -> bytes:
    """A Part 10 file with these pixels, written by pydicom (pads odd values to even)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = UID(syntax)
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = modality
    ds.PatientName, ds.PatientID = "PACK^TEST", "PACK1"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = allocated, stored, stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric or ("RGB" if samples == 3 else "MONOCHROME2")
    if samples == 3:
        ds.PlanarConfiguration = planar
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = pixels
    ds["PixelData"].VR = "OW" if allocated > 8 else "OB"
    buffer = io.BytesIO()
    ds.save_as(buffer, implicit_vr=syntax == ImplicitVRLittleEndian,
               little_endian=syntax != ExplicitVRBigEndian, enforce_file_format=True)
    return buffer.getvalue()


def _anatomy(size: int, bits: int, signed: bool, seed: int = 0) -> np.ndarray:
    """A phantom slice (body, organs, noise) scaled into ``bits`` bits."""
    image = phantom(size, seed, 8, "CT", seed=seed).astype(np.int32) + 1024  # 0..~1800
    image = np.clip(image, 0, None)
    image = image * ((1 << bits) - 1) // max(int(image.max()), 1)
    if signed:
        image -= 1 << (bits - 1)
    return image


def _container(image: np.ndarray, allocated: int, signed: bool, big: bool = False) -> bytes:
    kind = ("i" if signed else "u") + ("1" if allocated == 8 else "2")
    dtype = np.dtype(kind).newbyteorder(">" if big else "<")
    return image.astype(dtype).tobytes()


PYDICOM_FILES = sorted(p for p in get_testdata_files() if os.path.isfile(p))


@pytest.mark.parametrize("path", PYDICOM_FILES, ids=lambda p: Path(p).name)
def test_every_pydicom_test_file_unpacks_to_its_exact_bytes(path: str) -> None:
    data = Path(path).read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the awkward files make pydicom talk
        packed, result = _pack(data)
    assert result.sha256 == _sha(data)
    assert _sha(_unpack(packed)) == _sha(data)


@pytest.mark.parametrize(("allocated", "stored", "signed"), [
    (8, 8, False), (8, 8, True), (16, 12, False), (16, 12, True), (16, 16, False),
    (16, 16, True), (16, 10, False)])
def test_generated_grey_images_round_trip_through_jpeg_ls(allocated: int, stored: int,
                                                          signed: bool) -> None:
    image = _anatomy(128, stored, signed)
    data = _object(_container(image, allocated, signed), rows=128, columns=128,
                   allocated=allocated, stored=stored, signed=signed)
    out = io.BytesIO()
    result = packing.pack(io.BytesIO(data), out, try_general=False)  # JPEG-LS itself
    packed = out.getvalue()
    assert _unpack(packed) == data
    assert (result.jpegls_frames, result.zstd_frames) == (1, 0)
    assert len(packed) < len(data)
    kept, _ = _pack(data)  # both tried: the smaller kept, the same bytes back
    assert len(kept) <= len(packed) and _unpack(kept) == data


def test_a_frame_that_zstandard_packs_smaller_than_jpeg_ls_is_kept_as_zstandard() -> None:
    """An ultrasound in grey with three identical channels and black borders."""
    grey = _anatomy(96, 8, False).astype(np.uint8)
    grey[:, :24] = 0
    data = _object(np.repeat(grey[..., None], 3, axis=2).tobytes(), rows=96, columns=96,
                   allocated=8, stored=8, samples=3)
    out = io.BytesIO()
    packing.pack(io.BytesIO(data), out, try_general=False)
    jpeg_ls_only = len(out.getvalue())
    kept, result = _pack(data)
    assert (result.jpegls_frames, result.zstd_frames) == (0, 1)
    assert len(kept) < jpeg_ls_only
    assert _unpack(kept) == data


def test_a_ct_slice_packs_smaller_than_zstandard_alone() -> None:
    image = phantom(256, 3, 8, "CT", seed=7)
    data = _object(image.astype("<i2").tobytes(), rows=256, columns=256, allocated=16,
                   stored=16, signed=True)
    packed, _ = _pack(data)
    assert len(packed) < 0.9 * len(zstandard.ZstdCompressor(level=19).compress(data))


def test_big_endian_and_implicit_vr_objects_round_trip() -> None:
    image = _anatomy(64, 12, True)
    for syntax, big in ((ExplicitVRBigEndian, True), (ImplicitVRLittleEndian, False)):
        data = _object(_container(image, 16, True, big), rows=64, columns=64, allocated=16,
                       stored=12, signed=True, syntax=syntax)
        packed, result = _pack(data)
        assert _unpack(packed) == data
        assert result.jpegls_frames == 1


@pytest.mark.parametrize("planar", [0, 1])
def test_multi_frame_rgb_ultrasound_round_trips_in_both_planar_configurations(
        planar: int) -> None:
    rng = np.random.default_rng(planar)
    frames = []
    for index in range(4):
        grey = _anatomy(96, 8, False, seed=index).astype(np.uint8)
        rgb = np.stack([grey, grey // 2, np.clip(grey + rng.integers(0, 8, grey.shape), 0, 255)
                        .astype(np.uint8)], axis=-1)
        frames.append(np.ascontiguousarray(rgb.transpose(2, 0, 1)) if planar else rgb)
    data = _object(b"".join(f.astype(np.uint8).tobytes() for f in frames), rows=96,
                   columns=96, allocated=8, stored=8, samples=3, planar=planar, frames=4,
                   modality="US", sop_class=UltrasoundMultiFrameImageStorage)
    packed, result = _pack(data)
    assert _unpack(packed) == data
    assert result.jpegls_frames == 4
    assert len(packed) < len(data) / 2


def test_multi_frame_mr_round_trips_frame_by_frame() -> None:
    image = np.concatenate([_anatomy(64, 12, False, seed=i) for i in range(5)])
    data = _object(_container(image, 16, False), rows=64, columns=64, allocated=16,
                   stored=12, frames=5, modality="MR", sop_class=MRImageStorage)
    packed, result = _pack(data)
    assert _unpack(packed) == data
    assert result.jpegls_frames == 5


def test_an_odd_length_pixel_value_keeps_its_padding_byte() -> None:
    image = _anatomy(63, 8, False)[:63, :63]  # 3969 bytes: pydicom pads it to 3970
    data = _object(image.astype(np.uint8).tobytes(), rows=63, columns=63, allocated=8,
                   stored=8)
    packed, result = _pack(data)
    assert _unpack(packed) == data
    assert result.jpegls_frames == 1


def test_padding_bits_holding_data_fall_back_to_zstandard_and_still_round_trip() -> None:
    image = _anatomy(64, 12, False).astype(np.uint16)
    image[:8, :8] |= 0x8000  # an overlay in bit 15, above Bits Stored
    data = _object(image.astype("<u2").tobytes(), rows=64, columns=64, allocated=16,
                   stored=12)
    packed, result = _pack(data)
    assert _unpack(packed) == data
    assert (result.jpegls_frames, result.zstd_frames) == (0, 1)
    assert any("padding bits" in note for note in result.notes)


@pytest.mark.parametrize(("why", "data"), [
    ("32-bit samples", _object(np.arange(32 * 32, dtype="<u4").tobytes(), rows=32,
                               columns=32, allocated=32, stored=32)),
    ("YBR_FULL_422", _object(bytes(range(256)) * 24, rows=32, columns=96, allocated=8,
                             stored=8, samples=3, photometric="YBR_FULL_422")),
])
def test_layouts_the_codec_cannot_take_are_zstandard_alone(why: str, data: bytes) -> None:
    packed, result = _pack(data)
    assert _unpack(packed) == data
    assert result.jpegls_frames == 0
    assert any(why in note for note in result.notes)


def test_encapsulated_pixel_data_is_zstandard_alone() -> None:
    image = _anatomy(64, 12, False).astype("<u2")
    stream = packing.JPEG_LS.encode(image.tobytes(), 64, 64, 1, 12, 0)
    data = _object(encapsulate([stream]), rows=64, columns=64, allocated=16, stored=12,
                   syntax=JPEGLSLossless)
    packed, result = _pack(data)
    assert _unpack(packed) == data
    assert result.notes == ["encapsulated pixel data"]


def test_bytes_that_are_not_dicom_are_packed_as_bytes() -> None:
    data = os.urandom(10_000) + b"not a DICOM file"
    packed, result = _pack(data)
    assert _unpack(packed) == data
    assert result.jpegls_frames == 0


def test_an_empty_object_round_trips() -> None:
    packed, _ = _pack(b"")
    assert _unpack(packed) == b""


def _ct() -> bytes:
    image = _anatomy(128, 12, True)
    return _object(_container(image, 16, True), rows=128, columns=128, allocated=16,
                   stored=12, signed=True)


def _read_all(packed: bytes) -> tuple[bytes, Exception | None]:
    """What an unpacking reader hands out before it fails, and its error."""
    got = bytearray()
    try:
        reader = Unpacker(io.BytesIO(packed))
        while chunk := reader.read(4096):
            got += chunk
    except CorruptPacked as exc:
        return bytes(got), exc
    return bytes(got), None


@pytest.mark.parametrize("where", ["header", "jpeg-ls frame", "zstd block", "digest"])
def test_a_corrupted_packed_object_is_refused_and_never_read_as_wrong_bytes(
        where: str) -> None:
    data = _ct()
    packed = bytearray(_pack(data)[0])
    frame = packed.index(bytes([packing.JPEGLS]) + len(data[-128 * 128 * 2:]).to_bytes(8,
                                                                                      "big"))
    at = {"header": 9, "jpeg-ls frame": frame + packing.BLOCK.size + 200,
          "zstd block": len(packing.HEADER) + packing.BLOCK.size + 20,
          "digest": len(packed) - 5}[where]
    packed[at] ^= 0x41
    got, error = _read_all(bytes(packed))
    assert isinstance(error, CorruptPacked)
    assert "damaged" in str(error) or "version" in str(error)
    assert got != data and data.startswith(got)


def test_a_truncated_or_extended_packed_object_is_refused() -> None:
    data = _ct()
    packed = _pack(data)[0]
    for damaged in (packed[:-40], packed[: len(packed) // 2], packed + b"\0"):
        got, error = _read_all(damaged)
        assert isinstance(error, CorruptPacked)
        assert got != data


def test_a_plain_dicom_file_is_not_taken_for_a_packed_one() -> None:
    with pytest.raises(CorruptPacked, match="magic"):
        Unpacker(io.BytesIO(_ct())).read()


class _OffByOne(packing.JpegLs):
    """A codec whose decoder does not give back what was encoded."""

    def decode(self, stream: bytes) -> bytes:
        decoded = bytearray(super().decode(stream))
        decoded[100] ^= 1
        return bytes(decoded)


def test_self_verification_catches_a_codec_that_does_not_round_trip(
        caplog: pytest.LogCaptureFixture) -> None:
    data = _ct()
    out = io.BytesIO()
    with caplog.at_level(logging.ERROR, logger="imaging.packing"):
        assert pack_verified(io.BytesIO(data), out, codec=_OffByOne()) is None
    assert "did not round-trip" in caplog.text
    # The same object with the real codec is kept.
    assert pack_verified(io.BytesIO(data), io.BytesIO()) is not None


def test_packing_refuses_an_object_that_is_not_the_one_on_record(
        caplog: pytest.LogCaptureFixture) -> None:
    data = _ct()
    with caplog.at_level(logging.ERROR, logger="imaging.packing"):
        assert pack_verified(io.BytesIO(data), io.BytesIO(), expected_sha256="0" * 64) is None
    assert "on record" in caplog.text
    assert pack_verified(io.BytesIO(data), io.BytesIO(), expected_sha256=_sha(data))


def test_a_large_multi_frame_object_is_packed_one_frame_at_a_time(tmp_path: Path) -> None:
    """64 frames of 512 x 512 x 16 bits (32 MiB) through files: what pack writes and
    unpack reads back are the original bytes, and no block is larger than a frame."""
    rng = np.random.default_rng(1)
    frame = (_anatomy(512, 11, False) + rng.integers(0, 4, (512, 512))).astype("<u2")
    source = tmp_path / "big.dcm"
    source.write_bytes(_object(frame.tobytes() * 64, rows=512, columns=512, allocated=16,
                               stored=12, frames=64, modality="MR", sop_class=MRImageStorage))
    target = tmp_path / "big.pack"
    with source.open("rb") as fp, target.open("w+b") as out:
        result = pack_verified(fp, out)
        assert result is not None and result.jpegls_frames == 64
        largest = 0
        out.seek(len(packing.HEADER))
        while True:
            fields = packing.BLOCK.unpack(out.read(packing.BLOCK.size))
            if fields[0] == packing.END:
                break
            largest = max(largest, fields[1])
            out.seek(fields[2], io.SEEK_CUR)
    assert largest == 512 * 512 * 2
    with target.open("rb") as fp:
        digest = hashlib.sha256()
        reader = Unpacker(fp)
        while chunk := reader.read(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(source.read_bytes()).hexdigest()
