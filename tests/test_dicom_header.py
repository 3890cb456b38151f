"""An instance's DICOM header as rows (imaging.dicom_header), from the metadata the archive
stores: the same DICOM JSON that ingest writes (imaging.dicomfile.metadata_json)."""

from __future__ import annotations

from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from imaging import dicomfile
from imaging.dicom_header import HeaderRow, count, header_rows, search


def _stored(ds: Dataset) -> dict[str, Any]:
    """The metadata ingest would store for ``ds``."""
    return dicomfile.metadata_json(ds)


def _dataset() -> Dataset:
    ds = Dataset()
    ds.PatientName = "Pereira^Paula^^Sra."
    ds.PatientID = "PAULA-001"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PixelSpacing = [0.5, 0.5]
    ds.Rows = 4
    item = Dataset()
    item.CodeValue = "T-D3000"
    item.CodingSchemeDesignator = "SRT"
    item.CodeMeaning = "Chest"
    other = Dataset()
    other.CodeValue = "T-D4000"
    other.CodeMeaning = "Abdomen"
    ds.AnatomicRegionSequence = Sequence([item, other])
    ds.add_new(0x00290010, "LO", "SIEMENS CSA HEADER")  # reserves block 0x10 of group 0029
    ds.add_new(0x00291008, "CS", "IMAGE NUM 4")  # CSA Image Header Type, in that block
    ds.add_new(0x00291108, "CS", "ORPHAN")  # block 0x11: no creator reserves it
    ds.add_new(0x00090010, "LO", "ACME 1.0")  # a creator pydicom does not know
    ds.add_new(0x00091001, "LO", "secret")
    ds.PixelData = b"\0" * 32
    ds.add_new(0x7FE00010, "OW", b"\0" * 32)
    return ds


def _by_tag(rows: list[HeaderRow]) -> dict[str, HeaderRow]:
    return {row.tag: row for row in rows}


ROWS = _by_tag(header_rows(_stored(_dataset())))


def test_rows_carry_the_tag_keyword_and_name_from_the_dictionary_and_the_vr():
    row = ROWS["(0010,0020)"]
    assert (row.keyword, row.name, row.vr, row.value) == (
        "PatientID", "Patient ID", "LO", "PAULA-001")


def test_rows_come_in_tag_order():
    tags = list(ROWS)
    assert tags == sorted(tags)


def test_a_person_name_shows_its_alphabetic_form():
    assert ROWS["(0010,0010)"].value == "Pereira^Paula^^Sra."


def test_multiple_values_are_joined_by_a_backslash():
    assert ROWS["(0008,0008)"].value == "ORIGINAL\\PRIMARY\\AXIAL"
    assert ROWS["(0028,0030)"].value == "0.5\\0.5"


def test_numbers_are_shown_as_numbers():
    assert ROWS["(0028,0010)"].value == "4"


def test_pixel_data_is_bulk_data_shown_as_such_and_not_as_a_value():
    row = ROWS["(7FE0,0010)"]
    assert row.bulk_data and row.value == ""
    assert row.keyword == "PixelData"


def test_a_sequence_has_its_items_as_nested_rows():
    row = ROWS["(0008,2218)"]
    assert row.is_sequence and row.keyword == "AnatomicRegionSequence"
    assert len(row.items) == 2
    first = _by_tag(list(row.items[0]))
    assert first["(0008,0104)"].value == "Chest"
    assert first["(0008,0100)"].keyword == "CodeValue"


def test_a_private_element_is_marked_private_with_its_creator_and_known_name():
    row = ROWS["(0029,1008)"]
    assert row.private and row.creator == "SIEMENS CSA HEADER"
    assert row.name == "CSA Image Header Type"
    assert row.keyword == ""
    assert row.value == "IMAGE NUM 4"


def test_a_private_creator_element_is_named_so():
    row = ROWS["(0029,0010)"]
    assert row.private and row.name == "Private Creator" and row.value == "SIEMENS CSA HEADER"


def test_a_private_element_of_an_unknown_creator_is_private_with_the_creator_and_no_name():
    row = ROWS["(0009,1001)"]
    assert row.private and row.creator == "ACME 1.0" and row.name == ""
    assert row.value == "secret"


def test_a_private_element_no_creator_reserves_is_private_without_a_creator():
    row = ROWS["(0029,1108)"]
    assert row.private and row.creator == "" and row.name == ""


def test_public_elements_are_not_private():
    assert not ROWS["(0010,0010)"].private


def test_a_small_binary_value_kept_inline_says_its_length():
    ds = Dataset()
    ds.add_new(0x00420011, "OB", b"\x01\x02\x03\x04")
    (row,) = header_rows(_stored(ds))
    assert row.binary_length == 4 and not row.bulk_data and row.value == ""


def test_an_attribute_tag_value_is_shown_as_a_tag():
    ds = Dataset()
    ds.add_new(0x00209165, "AT", [0x00200032, 0x00209057])
    (row,) = header_rows(_stored(ds))
    assert row.value == "(0020,0032)\\(0020,9057)"


def test_an_empty_value_is_shown_empty():
    ds = Dataset()
    ds.AccessionNumber = ""
    (row,) = header_rows(_stored(ds))
    assert row.value == "" and row.keyword == "AccessionNumber"


def test_search_finds_by_keyword_name_tag_and_value_in_any_case():
    rows = header_rows(_stored(_dataset()))
    for query in ("patientid", "Patient ID", "0010,0020", "00100020", "paula-001"):
        assert "(0010,0020)" in [r.tag for r in search(rows, query)], query


def test_search_keeps_a_sequence_with_only_its_matching_rows_and_item_numbers():
    rows = header_rows(_stored(_dataset()))
    (sequence,) = search(rows, "abdomen")
    assert sequence.tag == "(0008,2218)"
    assert sequence.items[0] == ()
    assert [r.value for r in sequence.items[1]] == ["Abdomen"]


def test_search_finds_private_elements_by_their_creator():
    rows = header_rows(_stored(_dataset()))
    assert {r.tag for r in search(rows, "acme")} == {"(0009,0010)", "(0009,1001)"}


def test_an_empty_search_keeps_every_row():
    rows = header_rows(_stored(_dataset()))
    assert search(rows, "  ") == rows
    assert count(rows) == len(ROWS) + 5  # the two items' rows


def test_every_header_pydicom_ships_can_be_shown(pydicom_test_files):
    shown = 0
    for path in pydicom_test_files:
        try:
            metadata = _stored(dcmread(path, defer_size=dicomfile.DEFER_SIZE, force=True))
        except Exception:  # noqa: S112 - files pydicom cannot read are refused by ingest
            continue
        rows = header_rows(metadata)
        assert count(rows) >= len(metadata), path.name
        shown += 1
    assert shown > 80
