"""An instance's DICOM header as rows a person reads, from its stored metadata.

Pure DICOM layer (pydicom's data dictionary only). The input is the DICOM JSON model
(PS3.18 F.2) the archive keeps in ``Instance.metadata``, so showing a header never opens
the file; values kept out of it (``BulkDataURI``: pixel data, large binary values) are
shown as bulk data, not fetched.

Private data elements (odd groups) are named by their private creator, the value of
``(gggg,00xx)`` in the same dataset, and by pydicom's private dictionary when it knows
that creator; otherwise they are just private. Sequences become nested items of rows.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydicom import datadict


@dataclasses.dataclass(frozen=True)
class HeaderRow:
    """One data element.

    Attributes
    ----------
    tag : str
        ``(gggg,eeee)``, upper-case hexadecimal.
    keyword, name : str
        From the data dictionary; empty when it has none (unknown private elements).
    vr : str
        The value representation as stored.
    value : str
        The value as text: multiple values joined by a backslash, person names in their
        alphabetic form; empty for sequences, bulk data and inline binary values.
    private : bool
        An element of an odd group.
    creator : str
        The private creator the element belongs to, when the dataset names one.
    bulk_data : bool
        The value is bulk data, kept in the file and not in the metadata.
    binary_length : int or None
        For a small binary value kept inline (``InlineBinary``), its length in bytes.
    items : tuple of tuple of HeaderRow
        A sequence's items, each its rows.
    """

    tag: str
    keyword: str
    name: str
    vr: str
    value: str = ""
    private: bool = False
    creator: str = ""
    bulk_data: bool = False
    binary_length: int | None = None
    items: tuple[tuple[HeaderRow, ...], ...] = ()

    @property
    def is_sequence(self) -> bool:
        return self.vr == "SQ"

    def matches(self, query: str) -> bool:
        """Does this element itself (not its items) match ``query``, case-insensitively?

        The tag matches with or without its punctuation: ``0010,0010``, ``00100010``.
        """
        needle = query.strip().lower()
        if not needle:
            return True
        bare = self.tag.strip("()").replace(",", "")
        haystack = " ".join((self.tag, bare, self.keyword, self.name, self.vr, self.value,
                             self.creator)).lower()
        return needle in haystack


def format_tag(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _creator_slot(tag: int) -> int | None:
    """The tag of the private creator element that reserves ``tag``'s block, if any."""
    element = tag & 0xFFFF
    block = element >> 8
    if block < 0x10:
        return None
    return (tag & 0xFFFF0000) | block


def _is_creator_element(tag: int) -> bool:
    return bool(tag >> 16 & 1) and 0x10 <= (tag & 0xFFFF) <= 0xFF


def _public_names(tag: int) -> tuple[str, str]:
    if tag & 0xFFFF == 0:
        return "", "Group Length"
    try:
        entry = datadict.get_entry(tag)
    except KeyError:
        return "", ""
    return entry[4], entry[2]


def _private_name(tag: int, creator: str) -> str:
    if _is_creator_element(tag):
        return "Private Creator"
    if tag & 0xFFFF == 0:
        return "Private Group Length"
    if not creator:
        return ""
    try:
        return datadict.get_private_entry(tag, creator)[2]
    except KeyError:
        return ""


def _text(value: Any, vr: str) -> str:
    if value is None:
        return ""
    if vr == "PN" and isinstance(value, Mapping):
        for group in ("Alphabetic", "Ideographic", "Phonetic"):
            if value.get(group):
                return str(value[group])
        return ""
    if vr == "AT" and isinstance(value, str) and len(value) == 8:
        try:
            return format_tag(int(value, 16))
        except ValueError:
            return value
    return str(value)


def _binary_length(encoded: Any) -> int | None:
    try:
        return len(base64.b64decode(str(encoded), validate=True))
    except (binascii.Error, ValueError):
        return None


def _creators(dataset: Mapping[str, Any]) -> dict[int, str]:
    """Private creator values of this dataset, by the tag of their creator element."""
    found: dict[int, str] = {}
    for key, element in dataset.items():
        try:
            tag = int(key, 16)
        except ValueError:
            continue
        if _is_creator_element(tag) and isinstance(element, Mapping):
            values = element.get("Value") or []
            if values and values[0] is not None:
                found[tag] = str(values[0]).strip()
    return found


def header_rows(dataset: Mapping[str, Any]) -> list[HeaderRow]:
    """The rows of a dataset in the DICOM JSON model, in tag order.

    Keys that are not tags are skipped rather than refused: a header is for reading and
    a stored oddity should not hide the rest.
    """
    creators = _creators(dataset)
    rows: list[tuple[int, HeaderRow]] = []
    for key, element in dataset.items():
        try:
            tag = int(key, 16)
        except ValueError:
            continue
        if not isinstance(element, Mapping):
            continue
        rows.append((tag, _row(tag, element, creators)))
    rows.sort(key=lambda pair: pair[0])
    return [row for _, row in rows]


def _row(tag: int, element: Mapping[str, Any], creators: Mapping[int, str]) -> HeaderRow:
    vr = str(element.get("vr", "UN"))
    private = bool(tag >> 16 & 1)
    if private:
        slot = _creator_slot(tag)
        creator = creators.get(slot, "") if slot is not None else ""
        keyword, name = "", _private_name(tag, creator)
    else:
        creator = ""
        keyword, name = _public_names(tag)
    common: dict[str, Any] = {"tag": format_tag(tag), "keyword": keyword, "name": name,
                              "vr": vr, "private": private, "creator": creator}
    if "BulkDataURI" in element:
        return HeaderRow(**common, bulk_data=True)
    if "InlineBinary" in element:
        return HeaderRow(**common, binary_length=_binary_length(element["InlineBinary"]))
    values = element.get("Value") or []
    if vr == "SQ":
        items = tuple(tuple(header_rows(item)) if isinstance(item, Mapping) else ()
                      for item in values)
        return HeaderRow(**common, items=items)
    return HeaderRow(**common, value="\\".join(_text(v, vr) for v in values))


def search(rows: Sequence[HeaderRow], query: str) -> list[HeaderRow]:
    """The rows that match ``query``, and the sequences holding a match with only their
    matching rows left in their items; a matching sequence keeps all of its items."""
    if not query.strip():
        return list(rows)
    found: list[HeaderRow] = []
    for row in rows:
        if row.matches(query):
            found.append(row)
            continue
        items = tuple(tuple(search(item, query)) for item in row.items)
        if any(items):
            # Items that hold no match stay, empty, so the others keep their numbers.
            found.append(dataclasses.replace(row, items=items))
    return found


def count(rows: Iterable[HeaderRow]) -> int:
    """How many elements, nested ones included."""
    return sum(1 + sum(count(item) for item in row.items) for row in rows)
