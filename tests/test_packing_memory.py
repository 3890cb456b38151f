"""Packing streams: a large object is packed and unpacked, file to file, holding a few
frames at a time, never the object (issue 13; ``imaging.packing``'s "Memory" note).

The object is written frame by frame to a temporary file (128 MiB of 512 x 512 16-bit CT
frames, each a phantom slice, so every frame goes to JPEG-LS), and tracemalloc's peak of
Python allocations (NumPy arrays and bytes included) is measured over the pack and over
the unpack.
"""

from __future__ import annotations

import hashlib
import struct
import tracemalloc
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from imaging import packing
from imaging.synthetic import phantom

pytestmark = pytest.mark.slow

SIZE = 512
FRAMES = 256  # 512 KiB each: 128 MiB
# Twice the larger of CHUNK (4 MiB, the zstandard block and the unpacker's buffer) and a
# frame: 16 frames, a sixteenth of the object (measured: 4.5 MiB packing, 6.2 unpacking).
PEAK_BOUND = 2 * max(packing.CHUNK, SIZE * SIZE * 2)


def write_multiframe_ct(path: Path, frames: int, size: int = SIZE) -> str:
    """A native 16-bit signed multi-frame CT written one frame at a time; its SHA-256.

    pydicom writes the header; the Pixel Data element's tag, VR and length are written
    here, then each frame, so the pixels are never all in memory.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientName, ds.PatientID = "CT", "LARGE^MULTIFRAME", "PACK-LARGE"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.NumberOfFrames = frames
    ds.save_as(path, enforce_file_format=True)
    digest = hashlib.sha256(path.read_bytes())
    with path.open("ab") as out:
        element = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, frames * size * size * 2)
        out.write(element)
        digest.update(element)
        for index in range(frames):
            frame = phantom(size, index, frames, "CT", seed=index).astype("<i2").tobytes()
            out.write(frame)
            digest.update(frame)
    return digest.hexdigest()


def _peak(work) -> int:
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def large(tmp_path_factory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("large") / "ct.dcm"
    return path, write_multiframe_ct(path, FRAMES)


def test_a_large_multiframe_object_packs_and_unpacks_in_a_few_frames_of_memory(large,
                                                                              tmp_path):
    source, sha256 = large
    size = source.stat().st_size
    assert size > 128 * 1024 * 1024
    packed, restored = tmp_path / "ct.pack", tmp_path / "ct.dcm"

    def pack() -> None:
        with source.open("rb") as fp, packed.open("wb") as out:
            result = packing.pack(fp, out)
        assert result.ratio > 1.5  # the frames went to JPEG-LS, not zstandard alone

    def unpack() -> None:
        with packed.open("rb") as fp, restored.open("wb") as out:
            assert packing.unpack(fp, out) == sha256

    pack_peak, unpack_peak = _peak(pack), _peak(unpack)
    assert pack_peak < PEAK_BOUND < size / 16
    assert unpack_peak < PEAK_BOUND
    digest = hashlib.sha256()
    with restored.open("rb") as fp:
        while chunk := fp.read(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == sha256
