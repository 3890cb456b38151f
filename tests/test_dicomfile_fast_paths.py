"""Ingest's direct readers give what the general ones give: the usual Part 10 file reads
as ``dcmread`` reads it (on every file pydicom ships and on a synthetic CT series; anything
unusual is left to ``dcmread``), and the usual date as ``strptime`` reads it."""

from __future__ import annotations

import datetime
import io
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from imaging import dicomfile


def _elements(ds: Dataset) -> list[tuple[Any, ...]]:
    """Each element as read: raw (not yet converted) or, where reading converted it
    (the character set), its value."""
    return [(int(tag), elem.VR, getattr(elem, "length", None), elem.value,
             getattr(elem, "value_tell", None))
            for tag in ds.keys()
            for elem in [ds.get_item(tag, keep_deferred=True)]]


def _both(data: bytes) -> tuple[Any, Any] | None:
    fast = dicomfile.read_part10(io.BytesIO(data))
    if fast is None:
        return None
    for tag in fast.file_meta.keys():  # each raw element says where its value is
        raw = fast.file_meta.get_item(tag, keep_deferred=True)
        assert isinstance(raw, RawDataElement)
        assert data[raw.value_tell:raw.value_tell + raw.length] == raw.value
    plain = dcmread(io.BytesIO(data), defer_size=dicomfile.DEFER_SIZE)
    return fast, plain


def _same(fast: Any, plain: Any) -> None:
    assert fast.preamble == plain.preamble
    assert (fast.is_implicit_VR, fast.is_little_endian) == (plain.is_implicit_VR,
                                                           plain.is_little_endian)
    assert fast.original_encoding == plain.original_encoding
    assert _elements(fast) == _elements(plain)
    assert {k: v.value for k, v in ((t, fast.file_meta[t]) for t in fast.file_meta.keys())} \
        == {k: v.value for k, v in ((t, plain.file_meta[t]) for t in plain.file_meta.keys())}
    assert dicomfile.metadata_json(fast) == dicomfile.metadata_json(plain)


def test_every_usual_shipped_file_reads_as_dcmread_reads_it(pydicom_test_files):
    read = 0
    for path in pydicom_test_files:
        data = path.read_bytes()
        try:
            dcmread(io.BytesIO(data), defer_size=dicomfile.DEFER_SIZE)
        except Exception:  # noqa: S112 - not for this reader either
            continue
        both = _both(data)
        if both is not None:
            _same(*both)
            read += 1
    assert read > 50  # most shipped files are usual ones


def test_a_synthetic_ct_slice_reads_as_dcmread_reads_it(ct_study):
    both = _both(ct_study[1][0].read_bytes())
    assert both is not None
    _same(*both)


def _ct(ct_study) -> bytes:
    return Path(ct_study[1][0]).read_bytes()


@pytest.mark.parametrize("change", [
    "no preamble", "group length too long", "group length too short", "no dataset",
    "big endian",
])
def test_unusual_files_are_left_to_dcmread(ct_study, change: str):
    data = bytearray(_ct(ct_study))
    (length,) = memoryview(data)[140:144].cast("I")
    if change == "no preamble":
        data = data[128:]
    elif change == "group length too long":
        data[140:144] = (length + 8).to_bytes(4, "little")
    elif change == "group length too short":
        data[140:144] = (length - 2).to_bytes(4, "little")
    elif change == "no dataset":
        data = data[:144 + length]
    else:  # Explicit VR Little Endian, as the synthetic slices are, to Big Endian
        assert b"1.2.840.10008.1.2.1\x00" in data
        data = data.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2.2\x00", 1)
    _left_to_dcmread(bytes(data))


def test_a_deflated_file_is_left_to_dcmread():
    _left_to_dcmread(Path(get_testdata_file("image_dfl.dcm")).read_bytes())  # type: ignore[arg-type]


def _left_to_dcmread(data: bytes) -> None:
    fp = io.BytesIO(data)
    assert dicomfile.read_part10(fp) is None
    assert fp.tell() == 0  # left where it was, for dcmread


@pytest.mark.parametrize("value", ["20261123", "19000101", "20260230", "00000000", "99991231",
                                   " 20261123 ", "2026.11.23", "2026113", "", "abcdefgh",
                                   "20261323", "\uff12\uff10\uff12\uff16\uff11\uff11\uff12\uff13"])
def test_dates_read_directly_as_strptime_reads_them(value: str):
    def by_strptime(text: str) -> datetime.date | None:
        for fmt in ("%Y%m%d", "%Y.%m.%d"):
            try:
                return datetime.datetime.strptime(text.strip(), fmt).date()
            except ValueError:
                continue
        return None

    assert dicomfile.parse_date(value) == by_strptime(value)
