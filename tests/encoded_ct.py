"""A synthetic CT stored as real scanners and PACS send it, in each transfer syntax a viewer
meets: 12-bit unsigned pixels with a CT rescale (HU = stored - 1024), uncompressed or
compressed as received.

The phantom (imaging.synthetic.phantom) has a uniform soft-tissue body of
:data:`SOFT_TISSUE_HU` with noise of 12 HU: an ROI drawn inside it must read that mean in
HU, whatever the encoding, if the viewer decoded the pixels and applied the rescale. RLE,
JPEG-LS and JPEG 2000 are encoded by pydicom's plugins; the JPEG processes by DCMTK's
``dcmcjpeg`` (pydicom has no JPEG encoder), which for baseline (8 bits) rescales the
pixels and rewrites Rescale Slope so the HU stay right, as lossy exports do.
"""

from __future__ import annotations

import datetime
import shutil
import subprocess
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from imaging.synthetic import PatientSpec, SeriesSpec, write_study

SOFT_TISSUE_HU = 40  # the phantom's body
INTERCEPT = -1024

# dcmcjpeg's option per JPEG transfer syntax; the others are encoded by pydicom.
_DCMCJPEG: dict[str, str] = {JPEGBaseline8Bit: "+eb", JPEGLossless: "+el", JPEGLosslessSV1: "+e1"}
_PYDICOM: set[str] = {RLELossless, JPEGLSLossless, JPEG2000Lossless}
LOSSY: set[str] = {JPEGBaseline8Bit}


def can_encode(transfer_syntax: str) -> bool:
    return transfer_syntax in _PYDICOM or (
        transfer_syntax in _DCMCJPEG and shutil.which("dcmcjpeg") is not None)


def with_ct_rescale(ds: Dataset) -> Dataset:
    """The slice as 12-bit unsigned stored values with Rescale Intercept -1024."""
    hu = ds.pixel_array.astype(np.int32)
    ds.PixelRepresentation = 0
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.RescaleIntercept = str(INTERCEPT)
    ds.RescaleSlope = "1"
    ds.PixelData = (hu - INTERCEPT).clip(0, 4095).astype(np.uint16).tobytes()
    return ds


def write_ct_study(folder: Path, patient: PatientSpec, transfer_syntax: str | None = None,
                   *, slices: int = 1, size: int = 256, description: str = "CT",
                   accession: str = "ACC-CT") -> tuple[str, list[Path]]:
    """A one-series CT study with CT rescale, in ``transfer_syntax`` (None: uncompressed);
    returns the study UID and the files."""
    native = folder / "native"
    study_uid, paths = write_study(
        native, patient, [SeriesSpec("CT", slices, size=size, description=description)],
        study_date=datetime.date(2026, 3, 2), accession=accession, description=description)
    out: list[Path] = []
    for path in paths:
        ds = with_ct_rescale(dcmread(path))
        ds.save_as(path, enforce_file_format=True)
        if transfer_syntax is None:
            out.append(path)
            continue
        target = folder / path.name
        encode(path, transfer_syntax, target)
        out.append(target)
    return study_uid, out


def encode(source: Path, transfer_syntax: str, target: Path) -> None:
    """Write ``source`` compressed in ``transfer_syntax`` to ``target`` (same SOP UIDs)."""
    if transfer_syntax in _DCMCJPEG:
        subprocess.run(["dcmcjpeg", "-q", _DCMCJPEG[transfer_syntax], str(source), str(target)],
                       check=True, timeout=60)
    elif transfer_syntax in _PYDICOM:
        ds = dcmread(source)
        ds.compress(transfer_syntax, generate_instance_uid=False)
        ds.save_as(target, enforce_file_format=True)
    else:
        raise ValueError(f"no encoder for {transfer_syntax}")
    if dcmread(target, stop_before_pixels=True).file_meta.TransferSyntaxUID != transfer_syntax:
        raise AssertionError(f"{target} is not in {transfer_syntax}")
