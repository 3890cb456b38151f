"""Large multi-frame objects for the memory benchmarks, written without holding them.

The header goes through pydicom; the pixel data, noise repeated from one 8 MiB block, is
appended to the file in chunks, so a 1 GiB object costs the writer 8 MiB.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydicom.dataset import Dataset

BLOCK_BYTES = 8 << 20


def write_multiframe(ds: Dataset, path: Path, frames: int) -> Path:
    """``ds`` (a single-frame 16-bit image with its File Meta, Explicit VR Little Endian)
    as ``frames`` frames of its Rows x Columns; its own pixel data is dropped."""
    ds.NumberOfFrames = frames
    if "PixelData" in ds:
        del ds.PixelData
    ds.save_as(path, enforce_file_format=True)
    length = frames * int(ds.Rows) * int(ds.Columns) * 2
    with path.open("ab") as out:  # (7FE0,0010) OW, explicit VR little endian
        out.write(b"\xe0\x7f\x10\x00OW\x00\x00" + length.to_bytes(4, "little"))
        block = os.urandom(min(BLOCK_BYTES, length))
        left = length
        while left:
            out.write(block[:min(left, len(block))])
            left -= min(left, len(block))
    return path
