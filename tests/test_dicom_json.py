"""The stored DICOM JSON metadata is exactly what pydicom's own conversion gives.

Ingest decodes common elements straight from their raw bytes for speed
(``imaging.dicomfile._raw_json``); this holds it to pydicom's answer on every file pydicom
ships, awkward ones included.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydicom import dcmread

from imaging import dicomfile


def _pydicom_json(path) -> dict[str, Any]:
    ds = dcmread(path, defer_size=dicomfile.DEFER_SIZE, force=True)
    fast = dicomfile._raw_json
    dicomfile._raw_json = lambda raw, encoding: None
    try:
        return dicomfile.metadata_json(ds)
    finally:
        dicomfile._raw_json = fast


def _fast_json(path) -> dict[str, Any]:
    return dicomfile.metadata_json(dcmread(path, defer_size=dicomfile.DEFER_SIZE, force=True))


def test_fast_metadata_equals_pydicoms_on_every_shipped_file(pydicom_test_files):
    compared = 0
    for path in pydicom_test_files:
        try:
            expected = _pydicom_json(path)
        except Exception:  # noqa: S112 - files pydicom cannot read are refused by ingest
            continue
        assert _fast_json(path) == expected, path.name
        compared += 1
    assert compared > 80


def test_fast_metadata_equals_pydicoms_on_synthetic_ct(ct_study):
    for path in ct_study[1][:3]:
        assert _fast_json(path) == _pydicom_json(path)


@pytest.mark.parametrize("raw_value, expected", [
    (b"1.5\\2 ", [1.5, 2.0]),
    (b"Souza^Marina", [{"Alphabetic": "Souza^Marina"}]),
])
def test_common_values_are_decoded_as_the_json_model_says(raw_value, expected):
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    vr = "DS" if b"." in raw_value else "PN"
    raw = RawDataElement(Tag(0x00091001), vr, len(raw_value), raw_value, 0, False, True)
    assert dicomfile._raw_json(raw, "iso8859") == {"vr": vr, "Value": expected}
