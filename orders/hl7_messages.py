"""Reading the HL7 v2 messages the portal accepts, and writing their acknowledgements.

Pure HL7 (python-hl7 only, no ORM): :func:`read` turns the text of one message into a
:class:`Received` (header plus what it says: an order, a patient update or a merge) or
raises :class:`Refused` with the acknowledgement code and reason it deserves;
:func:`acknowledgement` writes the ``ACK``.

Where the values are (HL7 v2.3 to 2.5.1, IHE Radiology RAD-2/RAD-4 and RAD-12):

- Patient: PID-3.1 (first identifier), PID-5 (family^given^middle), PID-7, PID-8.
- ORM^O01: ORC-1 order control (NW, XO new or changed; CA, OC, DC cancelled), ORC-2/3
  placer and filler order numbers, OBR-4 requested procedure (code^text), OBR-18
  accession number, OBR-19 requested procedure ID, OBR-21 scheduled station AE title,
  OBR-24 modality, scheduled start in OBR-27.4 or ORC-7.4 (else OBR-36, OBR-7), priority
  in OBR-27.6 or ORC-7.6 (else OBR-5), referring physician OBR-16 or ORC-12.
- OMI^O23 (v2.5): as ORM, with IPC-1 accession, IPC-2 requested procedure ID, IPC-5
  modality, IPC-9 scheduled station AE title and TQ1-7 start, TQ1-9 priority first.
- ADT^A40: PID is the surviving patient, MRG-1.1 the prior patient ID merged into it.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any

import hl7

VERSIONS = frozenset({"2.3", "2.3.1", "2.4", "2.5", "2.5.1"})
ORDER_TYPES = frozenset({"ORM^O01", "OMI^O23"})
ADT_TYPES = frozenset({"ADT^A08", "ADT^A40"})
SUPPORTED = ORDER_TYPES | ADT_TYPES

NEW_ORDER = frozenset({"NW", "XO", "SC"})
CANCEL_ORDER = frozenset({"CA", "OC", "DC"})

# HL7 table 0357, message error condition codes.
REQUIRED_FIELD_MISSING = "101"
DATA_TYPE_ERROR = "102"
TABLE_VALUE_NOT_FOUND = "103"
UNSUPPORTED_MESSAGE_TYPE = "200"
UNSUPPORTED_EVENT = "201"
UNSUPPORTED_VERSION = "203"
UNKNOWN_KEY = "204"
APPLICATION_ERROR = "207"
SEGMENT_SEQUENCE_ERROR = "100"

# HL7 priority (TQ-6, table 0027) to the worklist's RequestedProcedurePriority.
PRIORITIES = {"S": "STAT", "A": "HIGH", "P": "HIGH", "T": "HIGH", "C": "HIGH", "R": "ROUTINE"}
_MODALITY = re.compile(r"^[A-Z0-9_]{1,16}$")
_AE_TITLE = re.compile(r"^[ -\[\]-~]{1,16}$")  # printable, no backslash


class Refused(ValueError):
    """A message answered with ``code`` (AE: understood, not applied; AR: rejected)."""

    def __init__(self, code: str, reason: str, condition: str = APPLICATION_ERROR,
                 header: Header | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.condition = condition
        self.header = header


def _error(reason: str, condition: str = REQUIRED_FIELD_MISSING) -> Refused:
    return Refused("AE", reason, condition)


@dataclass(frozen=True)
class Header:
    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    control_id: str
    message_type: str  # "ORM^O01"
    version: str

    @property
    def trigger(self) -> str:
        return self.message_type.partition("^")[2]


@dataclass(frozen=True)
class PatientFacts:
    patient_id: str
    name: str  # DICOM PN: family^given^middle
    birth_date: datetime.date | None
    sex: str


@dataclass(frozen=True)
class OrderFacts:
    control: str  # ORC-1
    placer_order_number: str
    filler_order_number: str
    accession_number: str
    requested_procedure_id: str
    requested_procedure_description: str
    modality: str
    station_ae_title: str
    scheduled: datetime.datetime | None
    referring_physician: str
    priority: str

    @property
    def cancels(self) -> bool:
        return self.control in CANCEL_ORDER


@dataclass(frozen=True)
class Received:
    header: Header
    patient: PatientFacts
    order: OrderFacts | None = None  # ORM, OMI
    prior_patient_id: str = ""  # ADT^A40


def decode(data: bytes) -> str:
    """The message text: UTF-8 when it is, else ISO 8859-1 (as many Brazilian EHRs send)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def read_header(text: str) -> Header:
    """The MSH of ``text``; :class:`Refused` (AR) when it is not an HL7 v2 message."""
    text = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r")
    if not text.startswith("MSH") or len(text) < 8:
        raise Refused("AR", "not an HL7 v2 message: it does not start with an MSH segment",
                      SEGMENT_SEQUENCE_ERROR)
    try:
        message = hl7.parse(text)
        msh = message.segment("MSH")
    except Exception as exc:  # python-hl7 raises several kinds on bad text
        raise Refused("AR", f"malformed message: {exc}", SEGMENT_SEQUENCE_ERROR) from exc
    kind = "^".join(c for c in (_text(msh, 9, 1), _text(msh, 9, 2)) if c)
    return Header(
        sending_application=_text(msh, 3, 1), sending_facility=_text(msh, 4, 1),
        receiving_application=_text(msh, 5, 1), receiving_facility=_text(msh, 6, 1),
        control_id=_text(msh, 10), message_type=kind, version=_text(msh, 12, 1),
    )


def read(text: str) -> Received:
    """What the message says. :class:`Refused`: AR for what is not a message the portal
    takes (malformed, another type or version), AE for a supported message lacking what it
    needs (the reason says which field)."""
    header = read_header(text)
    try:
        return _read(text, header)
    except Refused as exc:
        exc.header = header
        raise


def _read(text: str, header: Header) -> Received:
    if not header.control_id:
        raise Refused("AR", "MSH-10 (message control ID) is empty", REQUIRED_FIELD_MISSING)
    if header.version not in VERSIONS:
        raise Refused("AR", f"HL7 version {header.version or '(none)'} is not supported "
                      f"(2.3 to 2.5.1)", UNSUPPORTED_VERSION)
    if header.message_type not in SUPPORTED:
        condition = (UNSUPPORTED_EVENT if header.message_type.split("^")[0] in ("ORM", "OMI",
                     "ADT") else UNSUPPORTED_MESSAGE_TYPE)
        raise Refused("AR", f"message type {header.message_type or '(none)'} is not "
                      f"accepted (ORM^O01, OMI^O23, ADT^A08, ADT^A40)", condition)
    message = hl7.parse(text.replace("\r\n", "\r").replace("\n", "\r").strip("\r"))
    patient = _patient(message)
    if header.message_type in ORDER_TYPES:
        return Received(header, patient, order=_order(message, header))
    if header.message_type == "ADT^A40":
        mrg = _segment(message, "MRG")
        if mrg is None:
            raise _error("ADT^A40 without an MRG segment", SEGMENT_SEQUENCE_ERROR)
        prior = _text(mrg, 1, 1)
        if not prior:
            raise _error("MRG-1 (prior patient ID) is empty")
        if prior == patient.patient_id:
            raise _error("MRG-1 names the surviving patient itself", DATA_TYPE_ERROR)
        return Received(header, patient, prior_patient_id=prior)
    return Received(header, patient)


def _segment(message: Any, name: str) -> Any:
    try:
        return message.segment(name)
    except KeyError:
        return None


def _text(segment: Any, field: int, component: int = 1) -> str:
    """Component ``component`` of field ``field`` (its first repetition, first
    subcomponent), as text; '' when absent. Field numbers are HL7's, MSH's included."""
    try:
        value = str(segment[field])
    except IndexError:
        return ""
    parts = value.split("~")[0].split("^")
    return parts[component - 1].split("&")[0].strip() if len(parts) >= component else ""


def _unescape(text: str) -> str:
    return (text.replace("\\F\\", "|").replace("\\S\\", "^").replace("\\T\\", "&")
            .replace("\\R\\", "~").replace("\\E\\", "\\"))


def _person_name(segment: Any, field: int, offset: int = 0) -> str:
    """An XPN (``offset`` 0) or XCN (``offset`` 1: the ID comes first) as a DICOM PN."""
    parts = [_unescape(_text(segment, field, offset + i)) for i in (1, 2, 3)]
    return "^".join(parts).rstrip("^")


def _date(value: str, what: str) -> datetime.date | None:
    if not value:
        return None
    try:
        return datetime.datetime.strptime(value[:8], "%Y%m%d").date()
    except ValueError:
        raise _error(f"{what} {value!r} is not a date (YYYYMMDD)", DATA_TYPE_ERROR) from None


def _datetime(value: str, what: str) -> datetime.datetime | None:
    """HL7 TS/DTM (``YYYYMMDD[HH[MM[SS]]]``, a time zone offset ignored) as a naive time."""
    if not value:
        return None
    digits = re.split(r"[+\-.]", value, maxsplit=1)[0]
    formats = {8: "%Y%m%d", 10: "%Y%m%d%H", 12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S"}
    try:
        return datetime.datetime.strptime(digits, formats[len(digits)])
    except (KeyError, ValueError):
        raise _error(f"{what} {value!r} is not a date and time", DATA_TYPE_ERROR) from None


def _patient(message: Any) -> PatientFacts:
    pid = _segment(message, "PID")
    if pid is None:
        raise _error("no PID segment", SEGMENT_SEQUENCE_ERROR)
    patient_id = _unescape(_text(pid, 3, 1))
    if not patient_id:
        raise _error("PID-3 (patient identifier) is empty")
    if len(patient_id) > 64:
        raise _error("PID-3 (patient identifier) is longer than 64 characters",
                     DATA_TYPE_ERROR)
    sex = _text(pid, 8)
    if sex and sex not in ("F", "M", "O", "U", "A", "N"):
        raise _error(f"PID-8 (sex) {sex!r} is not in HL7 table 0001", TABLE_VALUE_NOT_FOUND)
    return PatientFacts(
        patient_id=patient_id, name=_person_name(pid, 5),
        birth_date=_date(_text(pid, 7, 1), "PID-7 (birth date)"),
        sex={"F": "F", "M": "M", "O": "O"}.get(sex, ""),
    )


def _first(*values: str) -> str:
    return next((v for v in values if v), "")


def _order(message: Any, header: Header) -> OrderFacts:
    orc, obr = _segment(message, "ORC"), _segment(message, "OBR")
    if orc is None:
        raise _error("no ORC segment", SEGMENT_SEQUENCE_ERROR)
    control = _text(orc, 1)
    if control not in NEW_ORDER | CANCEL_ORDER:
        raise _error(f"ORC-1 (order control) {control or '(empty)'!r} is not handled "
                     f"(NW, XO, SC, CA, OC, DC)", TABLE_VALUE_NOT_FOUND)
    ipc, tq1 = _segment(message, "IPC"), _segment(message, "TQ1")
    if header.message_type == "OMI^O23" and ipc is None and control in NEW_ORDER:
        raise _error("OMI^O23 without an IPC segment", SEGMENT_SEQUENCE_ERROR)
    if obr is None and control in NEW_ORDER:
        raise _error("no OBR segment", SEGMENT_SEQUENCE_ERROR)

    def ipc_field(n: int) -> str:
        return _text(ipc, n, 1) if ipc is not None else ""

    def obr_field(n: int, component: int = 1) -> str:
        return _text(obr, n, component) if obr is not None else ""

    placer = _first(_text(orc, 2, 1), obr_field(2, 1))
    filler = _first(_text(orc, 3, 1), obr_field(3, 1))
    accession = _first(ipc_field(1), obr_field(18, 1), filler)
    if not accession:
        raise _error("no accession number (IPC-1, OBR-18 or the filler order number)")
    if len(accession) > 16:
        raise _error(f"accession number {accession!r} is longer than 16 characters",
                     DATA_TYPE_ERROR)
    modality = _first(ipc_field(5), obr_field(24, 1)).upper()
    station = _first(ipc_field(9), obr_field(21, 1))
    scheduled = _datetime(_first(
        _text(tq1, 7, 1) if tq1 is not None else "", obr_field(27, 4), _text(orc, 7, 4),
        obr_field(36, 1), obr_field(7, 1)), "scheduled start")
    priority_code = _first(_text(tq1, 9, 1) if tq1 is not None else "", obr_field(27, 6),
                           _text(orc, 7, 6), obr_field(5, 1)).upper()
    if control in NEW_ORDER:
        if not modality:
            raise _error("no modality (IPC-5 or OBR-24)")
        if not _MODALITY.match(modality):
            raise _error(f"modality {modality!r} is not a DICOM modality code",
                         DATA_TYPE_ERROR)
        if station and not _AE_TITLE.match(station):
            raise _error(f"scheduled station AE title {station!r} is not an AE title",
                         DATA_TYPE_ERROR)
        if scheduled is None:
            raise _error("no scheduled start (TQ1-7, OBR-27.4, ORC-7.4, OBR-36 or OBR-7)")
    requested_id = _first(ipc_field(2), obr_field(19, 1))
    return OrderFacts(
        control=control, placer_order_number=placer, filler_order_number=filler,
        accession_number=accession, requested_procedure_id=requested_id[:16],
        requested_procedure_description=_unescape(_first(obr_field(4, 2),
                                                         obr_field(4, 1)))[:64],
        modality=modality, station_ae_title=station, scheduled=scheduled,
        referring_physician=_first(_person_name(obr, 16, 1) if obr is not None else "",
                                   _person_name(orc, 12, 1)),
        priority=PRIORITIES.get(priority_code[:1], "ROUTINE") if priority_code else "ROUTINE",
    )


# --- acknowledgements -----------------------------------------------------------------------


def _escape(text: str) -> str:
    return (text.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\")
            .replace("&", "\\T\\").replace("~", "\\R\\").replace("\r", " ").replace("\n", " "))


def acknowledgement(header: Header | None, code: str, *, reason: str = "",
                    condition: str = "", control_id: str, now: datetime.datetime) -> str:
    """The ``ACK`` for a message (``header`` None: one whose MSH could not be read).

    MSA-3 carries the reason as text (v2.3 to 2.4 read it there); the ERR segment carries
    it with its table 0357 code, in the v2.5 layout (ERR-3, ERR-4) from 2.5 on and in
    ERR-1 before.
    """
    version = header.version if header is not None and header.version in VERSIONS else "2.5.1"
    msh = "|".join([
        "MSH", "^~\\&",
        _escape(header.receiving_application) if header else "PORTAL",
        _escape(header.receiving_facility) if header else "",
        _escape(header.sending_application) if header else "",
        _escape(header.sending_facility) if header else "",
        now.strftime("%Y%m%d%H%M%S"), "",
        f"ACK^{_escape(header.trigger)}^ACK" if header and header.trigger else "ACK",
        _escape(control_id), "P", version,
    ])
    received_id = _escape(header.control_id) if header else ""
    segments = [msh, f"MSA|{code}|{received_id}|{_escape(reason)[:80]}" if reason
                else f"MSA|{code}|{received_id}"]
    if code != "AA":
        text = _escape(reason)
        cond = condition or APPLICATION_ERROR
        if version in ("2.5", "2.5.1"):
            segments.append(f"ERR|||{cond}^{text}^HL70357|E||||{text}")
        else:
            segments.append(f"ERR|^^^{cond}&{text.replace('&', ' ')}&HL70357")
    return "\r".join(segments) + "\r"
