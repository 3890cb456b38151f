"""Packing ratios and speeds: imaging.packing against zstandard alone, gzip and DCMTK's
lossless JPEG-LS transcoding (dcmcjpls, which does not keep the original bytes).

    .venv/bin/python bench/packing.py

Synthetic CT, MR, CR, DX and US (phantom anatomy with noise: imaging.synthetic) and the
test files shipped inside pydicom's package (no download). Ratios are original size /
compressed size; "packed / dcmcjpls" is flagged "<" where packing is more than 10% below
the codec's own ratio (the goal of issue 13). Last, a 128 MiB multi-frame CT is packed and
unpacked file to file in a child process, which prints its tracemalloc peak and peak RSS.
"""

from __future__ import annotations

import gzip
import io
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path

import django

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
django.setup()

import numpy as np  # noqa: E402
import pydicom.data  # noqa: E402
import zstandard  # noqa: E402

from imaging import packing  # noqa: E402
from imaging.synthetic import phantom  # noqa: E402
from tests.test_packing import _object  # noqa: E402
from tests.test_packing_memory import write_multiframe_ct  # noqa: E402

# Shipped in pydicom's wheel (pydicom/data/test_files), native pixel data, awkward ones
# included: what each tests is its comment.
PYDICOM_FILES = {
    "CT_small.dcm": "CT 128x128 16-bit signed",
    "MR_small.dcm": "MR 64x64 16-bit signed",
    "examples_overlay.dcm": "MR 484x300 12 of 16 bits",
    "examples_palette.dcm": "US 800x350 8-bit palette",
    "examples_rgb_color.dcm": "US 320x240 RGB",
    "SC_rgb_jpeg_dcmd.dcm": "SC 256x256 RGB, implicit VR",
    "SC_rgb_small_odd.dcm": "SC 3x3 RGB, odd length",
    "MR_small_bigendian.dcm": "MR 64x64, big endian",
    "rtdose.dcm": "RT dose 15 frames 32-bit",
}


def _box_blur(image: np.ndarray, radius: int) -> np.ndarray:
    """A separable box blur (cumulative sums): soft edges, as a detector's blur gives."""
    for axis in (0, 1):
        padded = np.pad(image, [(radius + 1, radius) if a == axis else (0, 0) for a in (0, 1)],
                        mode="edge")
        summed = np.cumsum(padded, axis=axis, dtype=np.float64)
        upper = np.take(summed, range(2 * radius + 1, summed.shape[axis]), axis=axis)
        lower = np.take(summed, range(summed.shape[axis] - 2 * radius - 1), axis=axis)
        image = (upper - lower) / (2 * radius + 1)
    return image


def chest_cr(rows: int = 1250, columns: int = 1000, seed: int = 11) -> np.ndarray:
    """A PA chest CR at half the usual 2500 x 2000, 12 bits in MONOCHROME1 (bone white).

    Collimated borders (unexposed: near the top of the range, flat), soft tissue, two
    lungs darker than the mediastinum, a spine and ribs, blurred as a detector blurs, and
    quantum noise growing with the exposure; an L marker burned in.
    """
    rng = np.random.default_rng(seed)
    y, x = np.meshgrid(np.linspace(-1, 1, rows), np.linspace(-1, 1, columns), indexing="ij")
    attenuation = np.full((rows, columns), 0.15)  # direct exposure beside the body
    body = (x / 0.85) ** 2 + ((y - 0.05) / 1.05) ** 2 <= 1
    attenuation[body] = 0.55
    lungs = np.zeros_like(body)
    for side in (-1, 1):
        lungs |= ((x - side * 0.38) / 0.28) ** 2 + ((y + 0.05) / 0.62) ** 2 <= 1
    attenuation[lungs & body] = 0.3
    attenuation[(np.abs(x) < 0.06) & body] = 0.75  # spine
    for k in range(9):  # ribs: curved bands across each lung
        centre = -0.55 + k * 0.14 + 0.12 * x ** 2
        attenuation[(np.abs(y - centre) < 0.018) & lungs] += 0.18
    heart = ((x + 0.08) / 0.3) ** 2 + ((y - 0.25) / 0.25) ** 2 <= 1
    attenuation[heart & body] = 0.62
    attenuation = _box_blur(attenuation, 3)
    exposure = 3400 * (1 - attenuation)  # detector signal, before the MONOCHROME1 inversion
    exposure += rng.normal(0, 1, exposure.shape) * np.sqrt(np.maximum(exposure, 1)) * 0.9
    image = 4095 - np.clip(exposure, 0, 4095)
    shutter = (np.abs(x) > 0.93) | (y < -0.95) | (y > 0.96)
    image[shutter] = 4000 + rng.integers(0, 3, shutter.sum())
    image[int(rows * 0.08):int(rows * 0.12), int(columns * 0.86):int(columns * 0.875)] = 0
    image[int(rows * 0.115):int(rows * 0.12), int(columns * 0.86):int(columns * 0.9)] = 0
    return image.astype("<u2")


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
        "CR 1000x1250 12-bit chest": _object(chest_cr().tobytes(), rows=1250, columns=1000,
                                             allocated=16, stored=12, modality="CR",
                                             photometric="MONOCHROME1"),
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


def large_object_memory(path: Path) -> None:
    """Pack and unpack ``path`` file to file; print the tracemalloc peaks and peak RSS."""
    packed, restored = path.with_suffix(".pack"), path.with_suffix(".out")
    peaks = []
    for source, target, work in ((path, packed, packing.pack),
                                 (packed, restored, packing.unpack)):
        tracemalloc.start()
        t0 = time.perf_counter()
        with source.open("rb") as fp, target.open("wb") as out:
            work(fp, out)
        peaks.append((tracemalloc.get_traced_memory()[1], time.perf_counter() - t0))
        tracemalloc.stop()
    size = path.stat().st_size
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"{size / 2**20:.0f} MiB multi-frame CT (256 x 512x512 int16), file to file: "
          f"ratio {size / packed.stat().st_size:.2f}; tracemalloc peak "
          f"{peaks[0][0] / 2**20:.1f} MiB packing ({size / 1e6 / peaks[0][1]:.0f} MB/s), "
          f"{peaks[1][0] / 2**20:.1f} MiB unpacking ({size / 1e6 / peaks[1][1]:.0f} MB/s); "
          f"peak RSS of the process {rss:.0f} MiB")


def main() -> None:
    warnings.simplefilter("ignore")
    if sys.argv[1:2] == ["--large"]:
        large_object_memory(Path(sys.argv[2]))
        return
    if sys.argv[1:2] == ["--baseline"]:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS after django.setup() and the imports: {rss:.0f} MiB")
        return
    objects = synthetic()
    shipped = Path(pydicom.data.__file__).parent / "test_files"
    for name, what in PYDICOM_FILES.items():
        objects[f"pydicom {name} ({what})"] = (shipped / name).read_bytes()
    print(f"{'object':58} {'MB':>6} {'pack':>6} {'zstd':>6} {'gzip':>6} {'dcmcjpls':>8} "
          f"{'pack/jls':>9} {'pack MB/s':>9} {'unpack MB/s':>11}")
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
        jls_ratio = len(data) / jls if jls else 0.0
        versus = (f"{result.ratio / jls_ratio:8.2f}{'<' if result.ratio < 0.9 * jls_ratio else ' '}"
                  if jls_ratio else f"{'-':>9}")
        print(f"{name:58} {mb:6.2f} {result.ratio:6.2f} {len(data) / zstd:6.2f} "
              f"{len(data) / gz:6.2f} {jls_ratio or float('nan'):8.2f} {versus} "
              f"{mb / (t1 - t0):9.1f} {mb / (t2 - t1):11.1f}")
    with tempfile.TemporaryDirectory() as folder:
        large = Path(folder, "large.dcm")
        write_multiframe_ct(large, 256)
        for args in (["--baseline"], ["--large", str(large)]):
            subprocess.run([sys.executable, __file__, *args], check=True)


if __name__ == "__main__":
    main()
