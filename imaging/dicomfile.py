"""Reading and checking one DICOM object, with pydicom only (no ORM, no storage).

This is the pure layer under ``imaging.ingest``: it decides whether bytes are a DICOM object
the archive can accept and extracts what the index needs. It never changes the bytes.
"""

from __future__ import annotations

import datetime
import math
import struct
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO, Protocol, cast

from pydicom import dcmread
from pydicom.datadict import DicomDictionary  # type: ignore[attr-defined]
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.tag import Tag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
    PrivateTransferSyntaxes,
)

# Values longer than this are read from the file only when needed (pixel data, overlays).
DEFER_SIZE = 4096
BULK_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
BULK_THRESHOLD = 1024
PIXEL_DATA_TAGS = {Tag(0x7FE00010), Tag(0x7FE00008), Tag(0x7FE00009)}
ENCAPSULATED_UNDEFINED_LENGTH = 0xFFFFFFFF
# A bare dataset read with force=True must carry at least one of these to count as DICOM.
IDENTIFYING_TAGS = {Tag(0x00080016), Tag(0x00080018), Tag(0x0020000D), Tag(0x0020000E)}


class Values(Protocol):
    """What the field readers need of a dataset: pydicom's ``Dataset`` or :class:`_JsonFirst`."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def get_item(self, key: Any, *, keep_deferred: bool = False) -> Any: ...

    def __contains__(self, key: Any) -> bool: ...


class InvalidObject(ValueError):
    """The bytes are not a DICOM object the archive accepts; the message says why.

    Where the dataset could be read, the UIDs it names are kept, so the refusal can say
    which object it was (a STOW failed-instance item, a C-STORE audit entry).
    """

    sop_class_uid = ""
    sop_instance_uid = ""
    study_instance_uid = ""

    def named(self, ds: Dataset) -> InvalidObject:
        for attribute, keyword in (("sop_class_uid", "SOPClassUID"),
                                   ("sop_instance_uid", "SOPInstanceUID"),
                                   ("study_instance_uid", "StudyInstanceUID")):
            try:
                value = str(ds.get(keyword, "") or "").strip(" \x00")
                if len(value) <= 64 and UID(value).is_valid:  # never garbage as a name
                    setattr(self, attribute, value)
            except Exception:  # noqa: S110 - the refusal stands without its names
                pass
        return self


@dataclass(frozen=True)
class ParsedObject:
    """What the index needs from one object, read without loading its bulk data."""

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    has_file_meta: bool
    patient: dict[str, Any]
    study: dict[str, Any]
    series: dict[str, Any]
    instance: dict[str, Any]
    metadata: dict[str, Any] = field(repr=False)


def parse(fp: IO[bytes]) -> ParsedObject:
    """Parse and validate one DICOM object from a seekable binary file.

    Parameters
    ----------
    fp : file-like
        Positioned at the start of a Part 10 file or of a bare dataset (as a C-STORE
        body arrives). It is read but not closed.

    Raises
    ------
    InvalidObject
        With a reason a user can act on: not DICOM, truncated, a required UID missing,
        pixel data shorter than its attributes promise.
    """
    start = fp.tell()
    try:
        ds = read_part10(fp) or dcmread(fp, defer_size=DEFER_SIZE, force=False)
    except EOFError as exc:
        raise InvalidObject(f"file is truncated: {exc}") from exc
    except InvalidDicomError:
        fp.seek(start)
        try:
            ds = dcmread(fp, defer_size=DEFER_SIZE, force=True)
        except EOFError as exc:
            raise InvalidObject(f"file is truncated: {exc}") from exc
        except Exception as exc:  # pydicom raises many types on garbage
            raise InvalidObject(f"not a DICOM file: {exc}") from exc
        # force=True accepts nearly any bytes; require a plausible dataset.
        if not _looks_like_dataset(ds):
            raise InvalidObject(
                "not a DICOM file: no DICOM preamble and no dataset found"
            ) from None
    except Exception as exc:
        raise InvalidObject(f"not a DICOM file: {exc}") from exc

    # pydicom stops quietly (a warning) when the file ends inside a value of undefined
    # length; a complete file is always read to its last byte.
    stopped = fp.tell()
    end = fp.seek(0, 2)
    if stopped < end:
        raise InvalidObject(
            f"file is truncated: a value of undefined length starting before byte {stopped} "
            "has no end"
        )
    try:
        check_complete(ds, end, deflated=_is_deflated(ds))
        return _extract(ds, fp)
    except InvalidObject as exc:
        raise exc.named(ds) from None
    except Exception as exc:
        raise InvalidObject(f"unreadable DICOM dataset: {exc}").named(ds) from exc


# Explicit VR Little Endian element headers: VRs with a 4-byte length after 2 reserved bytes.
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR",
                       b"UT"})
_META_HEADER = b"DICM\x02\x00\x00\x00UL\x04\x00"


def dataset_offset(fp: IO[bytes]) -> int:
    """Where the dataset starts in ``fp``: after the preamble, ``DICM`` and the File Meta
    group of a Part 10 file, 0 for a bare dataset. ``fp`` is left at its start.

    The File Meta says who wrote the file (implementation, source AE), not what the object
    is: two copies of one object written by different software differ only there.
    """
    fp.seek(0)
    head = fp.read(132)
    offset = 132
    if len(head) < 132 or head[128:] != b"DICM":
        fp.seek(0)
        return 0
    while True:  # group 2 elements, always Explicit VR Little Endian (PS3.10 7.1)
        element = fp.read(8)
        if len(element) < 8 or struct.unpack_from("<H", element)[0] != 0x0002:
            break
        vr = element[4:6]
        if vr in _LONG_VRS:
            extra = fp.read(4)
            if len(extra) < 4:
                break
            length, size = struct.unpack("<L", extra)[0], 12
        else:
            length, size = struct.unpack_from("<H", element, 6)[0], 8
        offset += size + length
        fp.seek(offset)
    fp.seek(0)
    return offset


def read_part10(fp: IO[bytes]) -> FileDataset | None:
    """``dcmread(fp, defer_size=DEFER_SIZE)`` for the usual Part 10 file, or None (``fp``
    back where it was) for anything else, which ``dcmread`` itself then reads.

    The usual file: a preamble, ``DICM``, a File Meta group whose group length is right,
    then a little endian dataset. pydicom reads the File Meta group through its general
    dataset reader and converts and validates every element of it, a third of what
    reading the header of a CT slice costs; here its few elements are taken as they are,
    and the dataset is read by pydicom exactly as ``dcmread`` reads it.
    """
    start = fp.tell()
    head = fp.read(144)
    if len(head) < 144 or head[128:140] != _META_HEADER:
        fp.seek(start)
        return None
    (group_length,) = struct.unpack_from("<L", head, 140)
    meta_bytes = fp.read(group_length)
    after = fp.read(4)
    found = (_file_meta(head[140:144], meta_bytes, start + 132)
             if len(meta_bytes) == group_length else None)
    if found is None or len(after) < 4 or after[:2] in (b"\x00\x00", b"\x02\x00"):
        fp.seek(start)  # no dataset, a command set, or more File Meta elements
        return None
    meta, syntax = found
    if syntax in (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian,
                  *PrivateTransferSyntaxes):
        fp.seek(start)  # read another way than plain little endian elements
        return None
    fp.seek(-4, 1)
    is_implicit = syntax == ImplicitVRLittleEndian
    dataset = read_dataset(cast(BinaryIO, fp), is_implicit, True, defer_size=DEFER_SIZE)
    ds = FileDataset(fp, dataset, head[:128], meta, is_implicit, True)
    ds.set_original_encoding(is_implicit, True, dataset._character_set)
    return ds


def _file_meta(group_length: bytes, raw: bytes, offset: int,
               ) -> tuple[FileMetaDataset, UID] | None:
    """The File Meta elements (their group length's value, then the bytes after it) as raw
    elements, and the transfer syntax; None unless they are plain Explicit VR Little Endian
    group 2 elements filling ``raw`` exactly, with a transfer syntax. ``offset``: where the
    group length element starts in the file."""
    meta = FileMetaDataset()
    meta.set_original_encoding(False, True, "iso8859")
    meta[0x00020000] = RawDataElement(Tag(0x00020000), "UL", 4, group_length, offset + 8,
                                      False, True)
    offset += 12
    position, end = 0, len(raw)
    syntax = None
    while position < end:
        if position + 8 > end:
            return None
        group, element = struct.unpack_from("<HH", raw, position)
        vr = raw[position + 4:position + 6]
        if group != 2 or element == 0 or not (vr.isalpha() and vr.isupper()) or vr == b"SQ":
            return None
        if vr in _LONG_VRS:
            if position + 12 > end:
                return None
            (length,) = struct.unpack_from("<L", raw, position + 8)
            position += 12
        else:
            (length,) = struct.unpack_from("<H", raw, position + 6)
            position += 8
        if position + length > end:
            return None
        value = raw[position:position + length]
        tag = Tag(group, element)
        meta[tag] = RawDataElement(tag, vr.decode(), length, value, offset + position,
                                   False, True)
        if tag == 0x00020010:
            syntax = UID(value.decode("ascii", "replace").strip(" \x00"))
        position += length
    return (meta, syntax) if syntax else None


def _looks_like_dataset(ds: Dataset) -> bool:
    # Any identifying UID will do: a bare dataset that lacks only SOPInstanceUID should be
    # refused for that, not as "not DICOM".
    try:
        tags = set(ds.keys())
    except Exception:
        return False
    return bool(tags & IDENTIFYING_TAGS)


def _is_deflated(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    return meta is not None and meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian


def check_complete(ds: Dataset, end: int, *, deflated: bool = False) -> None:
    """Refuse a file that ends inside an element value.

    pydicom reads a value cut short by the end of the file without complaint (and a
    deferred value not at all), so a truncated upload would otherwise be stored.

    Parameters
    ----------
    ds : Dataset
        As read by ``dcmread`` with ``defer_size``, before any element is converted.
    end : int
        Offset of the end of the file, to check deferred values against.
    deflated : bool
        Value offsets count in the inflated stream, so only short reads can be checked.
    """
    for tag in list(ds.keys()):
        # Deferred values (pixel data) are checked against the file's length, not read; a
        # deflated file's offsets count in the inflated stream, so there they are read.
        raw = ds.get_item(tag, keep_deferred=not deflated)
        if raw is None:
            continue
        if isinstance(raw, RawDataElement):
            if raw.length == ENCAPSULATED_UNDEFINED_LENGTH:
                continue  # pydicom raises EOFError when the delimiter is missing
            if raw.value is None:
                short = not deflated and raw.value_tell + raw.length > end
            else:
                short = len(raw.value) < raw.length
            if short:
                raise InvalidObject(
                    f"file is truncated: element {tag} needs {raw.length} bytes "
                    f"but the file ends first"
                )
        elif raw.VR == "SQ" and raw.value:
            for item in raw.value:
                check_complete(item, end, deflated=deflated)


def _text(ds: Values, keyword: str, limit: int = 64) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, list | tuple) or getattr(value, "VM", 1) > 1:
        text = "\\".join(str(v) for v in value)
    else:
        text = str(value)
    return text.strip().replace("\x00", "")[:limit]


def _uid(ds: Values, keyword: str) -> str:
    value = _text(ds, keyword)
    if not value:
        raise InvalidObject(f"{keyword} is missing")
    if len(value) > 64 or not UID(value).is_valid:
        raise InvalidObject(f"{keyword} is not a valid UID: {value!r}")
    return value


def parse_date(value: str) -> datetime.date | None:
    """A DICOM DA value as a date, or None when empty or malformed (kept in metadata)."""
    value = value.strip()
    if len(value) == 8 and value.isascii() and value.isdigit():  # the usual YYYYMMDD
        try:
            return datetime.date(int(value[:4]), int(value[4:6]), int(value[6:]))
        except ValueError:
            return None
    for fmt in ("%Y%m%d", "%Y.%m.%d"):
        try:
            return datetime.datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    return None


def _int(ds: Values, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def expected_pixel_bytes(ds: Values) -> int | None:
    """Bytes of native pixel data that Rows, Columns, frames and bits promise."""
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    bits = _int(ds, "BitsAllocated")
    if not rows or not cols or not bits:
        return None
    samples = _int(ds, "SamplesPerPixel") or 1
    frames = _int(ds, "NumberOfFrames") or 1
    total_bits = rows * cols * samples * frames * bits
    nbytes = (total_bits + 7) // 8
    if str(ds.get("PhotometricInterpretation", "")) == "YBR_FULL_422":
        nbytes = nbytes // 3 * 2
    return nbytes


def check_pixel_data(ds: Values, transfer_syntax: str) -> None:
    """Refuse native pixel data shorter than its attributes say, or missing from an image.

    Encapsulated pixel data is left as is: its fragments carry their own lengths.
    """
    raw = ds.get_item(0x7FE00010, keep_deferred=True) if Tag(0x7FE00010) in ds else None
    if raw is None:
        if expected_pixel_bytes(ds) and not any(tag in ds for tag in PIXEL_DATA_TAGS):
            # Image attributes but no pixels: most likely a file cut off before them.
            raise InvalidObject("pixel data is missing although Rows and Columns are given")
        return
    length = raw.length if not isinstance(raw, DataElement) else len(raw.value or b"")
    if length == ENCAPSULATED_UNDEFINED_LENGTH:
        return  # encapsulated: fragments carry their own lengths
    if transfer_syntax and UID(transfer_syntax).is_encapsulated:
        return
    expected = expected_pixel_bytes(ds)
    if expected is not None and length < expected:
        raise InvalidObject(
            f"pixel data is {length} bytes but Rows x Columns x SamplesPerPixel x "
            f"NumberOfFrames x BitsAllocated needs {expected}"
        )


class _JsonFirst:
    """``ds.get`` for the index fields, answered from the object's DICOM JSON.

    The JSON is built first from the raw elements (its fast path decodes them without
    pydicom's per-element conversion); reading the index fields through pydicom afterwards
    converted some thirty elements a second time, a third of ingest's parse time. Values
    the JSON holds plainly (text, alphabetic-only names, integers) are taken from it, as
    pydicom would give them; anything else is asked of pydicom.
    """

    _STRING_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC",
                             "UI", "UR", "UT"})
    _INT_VRS = frozenset({"IS", "US", "UL", "SS", "SL"})

    def __init__(self, ds: Dataset, metadata: dict[str, Any]) -> None:
        self.ds = ds
        self.metadata = metadata

    def __contains__(self, tag: Any) -> bool:
        return tag in self.ds

    def get_item(self, tag: Any, *, keep_deferred: bool = False) -> Any:
        return self.ds.get_item(tag, keep_deferred=keep_deferred)

    def get(self, keyword: str, default: Any = None) -> Any:
        tag = _TAGS.get(keyword)
        entry = self.metadata.get(tag) if tag else None
        if tag and entry is None:
            return default  # the JSON has an entry for every element the dataset has
        if entry is not None and set(entry) <= {"vr", "Value"}:
            values = entry.get("Value")
            vr = entry["vr"]
            if values is None and (vr in self._STRING_VRS or vr in self._INT_VRS or vr == "PN"):
                return ""
            if vr == "PN" and all(set(v) == {"Alphabetic"} for v in values):
                values = [v["Alphabetic"] for v in values]
            elif vr not in self._STRING_VRS and vr not in self._INT_VRS:
                values = None
            if values:
                return values[0] if len(values) == 1 else list(values)
        return self.ds.get(keyword, default)


_INDEX_KEYWORDS = (
    "SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID",
    "IssuerOfPatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyDate",
    "StudyTime", "AccessionNumber", "StudyID", "StudyDescription", "ReferringPhysicianName",
    "InstitutionName", "Modality", "SeriesNumber", "SeriesDescription", "BodyPartExamined",
    "SeriesDate", "InstanceNumber", "NumberOfFrames", "Rows", "Columns", "BitsAllocated",
    "SamplesPerPixel", "PhotometricInterpretation",
)
_TAGS = {keyword: f"{int(Tag(keyword)):08X}" for keyword in _INDEX_KEYWORDS}


def _extract(ds: Dataset, fp: IO[bytes]) -> ParsedObject:
    metadata = metadata_json(ds)
    return _extract_fields(ds, _JsonFirst(ds, metadata), metadata)


def _extract_fields(ds: Dataset, values: Values, metadata: dict[str, Any]) -> ParsedObject:
    """The index fields: ``values`` answers ``get`` (pydicom's dataset, or :class:`_JsonFirst`
    over it); ``ds`` is the dataset itself, for its file meta and encoding."""
    meta = getattr(ds, "file_meta", None)
    has_file_meta = bool(meta) and "TransferSyntaxUID" in (meta or {})
    transfer_syntax = str(meta.TransferSyntaxUID) if has_file_meta and meta else ""
    if not transfer_syntax:
        transfer_syntax = (
            "1.2.840.10008.1.2.1" if not ds.is_implicit_VR else "1.2.840.10008.1.2"
        )
        if not ds.is_little_endian:
            transfer_syntax = "1.2.840.10008.1.2.2"

    if meta is not None and meta.get("MediaStorageSOPClassUID") == MediaStorageDirectoryStorage:
        raise InvalidObject(
            "a DICOMDIR is an index of media files, not an object to store; "
            "import the DICOMDIR path or its folder instead"
        )
    sop_instance_uid = _uid(values, "SOPInstanceUID")
    sop_class_uid = _text(values, "SOPClassUID") or (
        str(meta.get("MediaStorageSOPClassUID", "")) if meta else ""
    )
    if not sop_class_uid:
        raise InvalidObject("SOPClassUID is missing")
    study_uid = _uid(values, "StudyInstanceUID")
    series_uid = _uid(values, "SeriesInstanceUID")
    check_pixel_data(values, transfer_syntax)

    patient = {
        "patient_id": _text(values, "PatientID"),
        "issuer": _text(values, "IssuerOfPatientID"),
        "name": _text(values, "PatientName", 324),
        "birth_date": parse_date(_text(values, "PatientBirthDate")),
        "sex": _text(values, "PatientSex", 16),
    }
    study = {
        "study_date": parse_date(_text(values, "StudyDate")),
        "study_time": _text(values, "StudyTime", 16),
        "accession_number": _text(values, "AccessionNumber"),
        "study_id": _text(values, "StudyID", 16),
        "description": _text(values, "StudyDescription"),
        "referring_physician": _text(values, "ReferringPhysicianName", 324),
        "institution": _text(values, "InstitutionName"),
    }
    series = {
        "modality": _text(values, "Modality", 16),
        "series_number": _int(values, "SeriesNumber"),
        "description": _text(values, "SeriesDescription"),
        "body_part": _text(values, "BodyPartExamined"),
        "series_date": parse_date(_text(values, "SeriesDate")),
    }
    instance = {
        "instance_number": _int(values, "InstanceNumber"),
        "number_of_frames": _int(values, "NumberOfFrames") or 1,
        "rows": _int(values, "Rows"),
        "columns": _int(values, "Columns"),
    }
    return ParsedObject(
        sop_instance_uid=sop_instance_uid,
        sop_class_uid=sop_class_uid,
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        transfer_syntax_uid=transfer_syntax,
        has_file_meta=has_file_meta,
        patient=patient,
        study=study,
        series=series,
        instance=instance,
        metadata=metadata,
    )


def metadata_json(ds: Dataset) -> dict[str, Any]:
    """The DICOM JSON model of ``ds`` without bulk data.

    Large binary values become ``{"vr": ..., "BulkDataURI": "bulkdata/<tag path>"}``,
    relative to the instance URL, so WADO-RS metadata can be served without the file and
    stays correct behind a reverse proxy. Deferred values are not read from the file.
    """
    return _dataset_json(ds, prefix="")


def _dataset_json(
    ds: Dataset, prefix: str, little: bool | None = None, encoding: str | None = "iso8859"
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if little is None:  # the top level; sequence items inherit it
        little = getattr(ds, "is_little_endian", None) is True
    if Tag(0x00080005) in ds or not prefix:
        encoding = _text_encoding(ds)
    for tag in sorted(ds.keys()):
        raw = ds.get_item(tag, keep_deferred=True)
        if raw is None:
            continue
        key = f"{int(tag):08X}"
        if isinstance(raw, RawDataElement) and raw.value is not None and little:
            fast = _raw_json(raw, encoding)
            if fast is not None:
                out[key] = fast
                continue
        vr = raw.VR or "UN"
        length = getattr(raw, "length", None)
        deferred = not isinstance(raw, DataElement) and raw.value is None and length
        if vr in BULK_VRS and (
            deferred or tag in PIXEL_DATA_TAGS or (length is not None and length > BULK_THRESHOLD)
        ):
            out[key] = {"vr": vr, "BulkDataURI": f"bulkdata/{prefix}{key}"}
            continue
        elem = ds[tag]
        if elem.VR == "SQ":
            items = [
                _dataset_json(item, f"{prefix}{key}/{i}/", little, encoding)
                for i, item in enumerate(elem.value)
            ]
            out[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
            continue
        if elem.VR in BULK_VRS and elem.value is not None and len(elem.value) > BULK_THRESHOLD:
            out[key] = {"vr": elem.VR, "BulkDataURI": f"bulkdata/{prefix}{key}"}
            continue
        try:
            out[key] = elem.to_json_dict(None, BULK_THRESHOLD)
        except Exception:
            # A value pydicom cannot express in JSON stays in the file, reachable as bulk data.
            out[key] = {"vr": elem.VR, "BulkDataURI": f"bulkdata/{prefix}{key}"}
    return out


# --- A fast path for the common elements ----------------------------------------------------
# pydicom converts each raw element to a DataElement and then to JSON, about 50 us per
# element; header-heavy objects spend most of their ingest time there. The common value
# representations are decoded here straight from the raw bytes, with exactly pydicom's
# result (tests/test_dicom_json.py compares both on every file pydicom ships); anything
# else (sequences, private or ambiguous tags, other character sets, odd values) takes
# pydicom's path.
_MULTI_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "SH", "TM", "UC", "UI"})
_SINGLE_TEXT_VRS = frozenset({"LT", "ST", "UT", "UR"})
_CHARSET_VRS = frozenset({"LO", "SH", "UC", "LT", "ST", "UT", "PN"})
_BINARY_VRS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d",
               "UV": "Q", "SV": "q"}
_ENCODINGS = {"": "iso8859", "ISO_IR 6": "iso8859", "ISO_IR 100": "latin_1",
              "ISO_IR 192": "utf_8"}


def _text_encoding(ds: Dataset) -> str | None:
    raw = ds.get_item(0x00080005) if Tag(0x00080005) in ds else None
    if raw is None:
        return "iso8859"
    value = raw.value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, list | tuple) or value is None:
        return None if value else "iso8859"
    return _ENCODINGS.get(str(value).strip(" \x00"))


def _raw_json(raw: RawDataElement, encoding: str | None) -> dict[str, Any] | None:
    vr = raw.VR
    if vr is None:
        tag = raw.tag
        if tag.is_private or tag not in DicomDictionary:
            return None
        vr = DicomDictionary[tag][0]
    value = raw.value
    if value is None:
        return None
    if vr in _BINARY_VRS:
        fmt = _BINARY_VRS[vr]
        size = struct.calcsize(f"<{fmt}")
        if len(value) % size:
            return None
        if not value:
            return {"vr": vr}
        numbers = list(struct.unpack(f"<{len(value) // size}{fmt}", value))
        if vr in ("FL", "FD") and not all(math.isfinite(n) for n in numbers):
            return None
        return {"vr": vr, "Value": numbers}
    if vr in _CHARSET_VRS and encoding is None:
        return None
    if vr in _MULTI_TEXT_VRS or vr in _SINGLE_TEXT_VRS or vr in ("PN", "DS", "IS"):
        try:
            text = value.decode(encoding or "iso8859" if vr in _CHARSET_VRS else "iso8859")
        except (UnicodeDecodeError, LookupError):
            return None
        if "\x1b" in text:
            return None  # ISO 2022 escapes: pydicom's decoder handles them
        # Padding rules as pydicom.values has them: text VRs strip each value's end, AE
        # both ends of each value, the other strings only the end of the whole element.
        if vr in _SINGLE_TEXT_VRS:
            text = text.rstrip(" \x00") if vr != "UR" else text.rstrip(" ")
            return {"vr": vr, "Value": [text]} if text else {"vr": vr}
        if vr in ("LO", "SH", "UC"):
            parts = [p.rstrip("\x00 ") for p in text.split("\\")]
        elif vr == "AE":
            parts = [p.strip() for p in text.split("\\")]
        else:
            parts = text.rstrip("\x00 ").split("\\")
        if not any(parts):
            return {"vr": vr} if len(parts) == 1 else None
        if "" in parts:
            return None  # empty components: leave pydicom's own conventions to pydicom
        if vr == "PN":
            if any("=" in p for p in parts):
                return None
            return {"vr": vr, "Value": [{"Alphabetic": p} for p in parts]}
        if vr == "DS":
            try:
                return {"vr": vr, "Value": [float(p) for p in parts]}
            except ValueError:
                return None
        if vr == "IS":
            try:
                return {"vr": vr, "Value": [int(p) for p in parts]}
            except ValueError:
                return None
        return {"vr": vr, "Value": parts}
    return None
