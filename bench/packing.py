"""Packing ratios and speeds: imaging.packing against zstandard alone, gzip and DCMTK's
lossless JPEG-LS transcoding (dcmcjpls, which does not keep the original bytes).

    .venv/bin/python bench/packing.py

Synthetic CT, MR, DX and US (phantom anatomy with noise: imaging.synthetic) and pydicom's
test files with native pixel data. Ratios are original size / compressed size.
"""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import django

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
django.setup()

import numpy as np  # noqa: E402
import zstandard  # noqa: E402
from pydicom.data import get_testdata_file  # noqa: E402

from imaging import packing  # noqa: E402
from imaging.synthetic import phantom  # noqa: E402
from tests.test_packing import _object  # noqa: E402


def synthetic() -> dict[str, bytes]:
    rng = np.random.default_rng(3)
    ct = np.concatenate([phantom(512, i, 20, "CT", seed=i) for i in range(4)])
    mr = np.concatenate([np.clip(phantom(256, i, 20, "MR", seed=i), 0, 4095)
                         for i in range(8)]).astype("<u2")
    dx = np.clip(phantom(1024, 5, 20, "MR", seed=9).astype(np.int32) * 3
                 + rng.normal(0, 20, (1024, 1024)), 0, 4095).astype("<u2")
    grey = np.clip(phantom(256, 2, 20, "MR", seed=2) // 4, 0, 255).astype(np.uint8)
    us = np.stack([grey, grey, grey], axis=-1)
    return {
        "CT 512x512x4 int16": _object(ct.astype("<i2").tobytes(), rows=512, columns=512,
                                      allocated=16, stored=16, signed=True, frames=4),
        "MR 256x256x8 12-bit": _object(mr.tobytes(), rows=256, columns=256, allocated=16,
                                       stored=12, frames=8, modality="MR"),
        "DX 1024x1024 12-bit": _object(dx.tobytes(), rows=1024, columns=1024, allocated=16,
                                       stored=12, modality="DX"),
        "US 256x256 RGB": _object(us.tobytes(), rows=256, columns=256, allocated=8,
                                  stored=8, samples=3, modality="US"),
    }


def dcmcjpls(data: bytes) -> int | None:
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder, "in.dcm"), Path(folder, "out.dcm")
        source.write_bytes(data)
        done = subprocess.run(["dcmcjpls", "--encode-lossless", str(source), str(target)],
                              capture_output=True)
        return target.stat().st_size if done.returncode == 0 else None


def main() -> None:
    warnings.simplefilter("ignore")
    objects = synthetic()
    for name in ("CT_small.dcm", "MR_small.dcm", "US1_UNCR.dcm", "SC_rgb.dcm"):
        path = get_testdata_file(name)
        if path:
            objects[f"pydicom {name}"] = Path(str(path)).read_bytes()
    print(f"{'object':28} {'MB':>6} {'pack':>6} {'zstd':>6} {'gzip':>6} {'dcmcjpls':>8} "
          f"{'pack MB/s':>9} {'unpack MB/s':>11}")
    for name, data in objects.items():
        mb = len(data) / 1e6
        t0 = time.perf_counter()
        out = io.BytesIO()
        result = packing.pack(io.BytesIO(data), out)
        t1 = time.perf_counter()
        back = io.BytesIO()
        packing.unpack(io.BytesIO(out.getvalue()), back)
        t2 = time.perf_counter()
        assert back.getvalue() == data
        zstd = len(zstandard.ZstdCompressor(level=packing.ZSTD_LEVEL).compress(data))
        gz = len(gzip.compress(data, 6))
        jls = dcmcjpls(data)
        print(f"{name:28} {mb:6.2f} {result.ratio:6.2f} {len(data) / zstd:6.2f} "
              f"{len(data) / gz:6.2f} {(len(data) / jls if jls else 0):8.2f} "
              f"{mb / (t1 - t0):9.1f} {mb / (t2 - t1):11.1f}")


if __name__ == "__main__":
    main()
