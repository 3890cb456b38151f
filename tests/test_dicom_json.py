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


def _fields_both_ways(path) -> tuple[Any, Any] | None:
    """The index fields as ingest reads them (from the JSON first) and through pydicom."""
    via_json: object
    via_pydicom: object
    try:
        ds = dcmread(path, defer_size=dicomfile.DEFER_SIZE, force=True)
        metadata = dicomfile.metadata_json(ds)
        via_json = dicomfile._extract_fields(ds, dicomfile._JsonFirst(ds, metadata), metadata)
    except dicomfile.InvalidObject as exc:
        via_json = str(exc)
    except Exception:
        return None  # pydicom cannot read it: ingest refuses it before this point
    ds = dcmread(path, defer_size=dicomfile.DEFER_SIZE, force=True)
    try:
        via_pydicom = dicomfile._extract_fields(ds, ds, metadata)
    except dicomfile.InvalidObject as exc:
        via_pydicom = str(exc)
    return via_json, via_pydicom


def test_index_fields_read_from_the_json_equal_pydicoms_on_every_shipped_file(
    pydicom_test_files,
):
    compared = 0
    for path in pydicom_test_files:
        both = _fields_both_ways(path)
        if both is None:
            continue
        assert both[0] == both[1], path.name
        compared += 1
    assert compared > 80


def test_index_fields_with_several_name_groups_come_from_pydicom(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName = "Yamada^Tarou=山田^太郎"
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    ds.InstanceNumber = "7"
    path = tmp_path / "names.dcm"
    ds.save_as(path, enforce_file_format=True)
    both = _fields_both_ways(path)
    assert both is not None
    via_json, via_pydicom = both
    assert via_json == via_pydicom
    assert via_json.patient["name"] == "Yamada^Tarou=山田^太郎"
    assert via_json.instance["instance_number"] == 7
