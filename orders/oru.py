"""Writing the ``ORU^R01`` (HL7 v2.5.1) that carries a final report to the EHR, and reading
the acknowledgement it gets back.

Pure HL7 (python-hl7 only, no ORM). Where the values go:

- MSH-18 ``UNICODE UTF-8``: the text is sent as UTF-8, accents as they are.
- PID-3 patient identifier (its issuer as assigning authority, type MR), PID-5 name
  (family^given^middle^suffix^prefix from the DICOM PN), PID-7 birth date, PID-8 sex.
- ORC-1 ``RE``, ORC-2/3 and OBR-2/3 placer and filler order numbers, ORC-12 and OBR-16
  the referring physician, OBR-4 the procedure, OBR-7 when the images were taken, OBR-18
  the accession number (as RAD-4 orders carry it), OBR-19 the requested procedure ID,
  OBR-22 when the report was signed, OBR-25 the result status (``F`` final, ``C`` an
  amendment, a correction of a final result), OBR-32 the signing doctor (CRM&family&given).
- NTE after OBR: the reason for an amendment.
- OBX ``TX``, one per line of text: findings (``121071^Findings^DCM``), then impression
  (``121073^Impression^DCM``); OBX-11 the status, OBX-14 the signing time, OBX-16 the
  signing doctor (CRM^family^given).
- OBX ``RP``: the study's page in the portal (``url^PORTAL^TEXT^HTML``).

Text is escaped here rather than with ``hl7.util.escape``: that one writes every non-ASCII
character as ``\\X..\\`` of its code point, which a receiver reading UTF-8 decodes wrongly.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

import hl7

MESSAGE_TYPE = "ORU^R01"
VERSION = "2.5.1"
FINAL = "F"
CORRECTED = "C"
FINDINGS = "121071^Findings^DCM"
IMPRESSION = "121073^Impression^DCM"
STUDY_LINK = "PORTAL_LINK^Study in the portal^L"
DELIVERED = frozenset({"AA", "CA"})  # original and enhanced mode accept

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def escape(text: str) -> str:
    """``text`` as the value of one component: the delimiters ``|^~\\&`` written as their
    escape sequences, line breaks and other control characters as spaces."""
    text = _CONTROL.sub(" ", text.replace("\r\n", " ").replace("\r", " ").replace("\n", " "))
    return (text.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\")
            .replace("&", "\\T\\").replace("~", "\\R\\"))


def lines(text: str) -> list[str]:
    """The text's lines (blank lines kept, so paragraphs stay apart), trailing blanks off."""
    found = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    while found and not found[-1]:
        found.pop()
    return found


def timestamp(moment: datetime.datetime | None) -> str:
    """HL7 DTM with its offset (``20260310143000-0300``); '' for None."""
    return moment.strftime("%Y%m%d%H%M%S%z") if moment is not None else ""


def person_name(pn: str) -> list[str]:
    """A DICOM PN (family^given^middle^prefix^suffix, its first group) as XPN components
    (family, given, middle, suffix, prefix), escaped."""
    parts = (pn.split("=")[0].split("^") + [""] * 5)[:5]
    family, given, middle, prefix, suffix = (escape(p.strip()) for p in parts)
    return [family, given, middle, suffix, prefix]


def _components(values: list[str], separator: str = "^") -> str:
    return separator.join(values).rstrip(separator)


def _xcn(identifier: str, pn: str, separator: str = "^") -> str:
    """An XCN (ID first, then the name) or, with ``&``, a CNN inside a component."""
    if not (identifier or pn):
        return ""
    return _components([escape(identifier), *person_name(pn)[:3]], separator)


@dataclass(frozen=True)
class Doctor:
    name: str  # DICOM PN: family^given
    professional_id: str  # the CRM


@dataclass(frozen=True)
class ResultFacts:
    """What one ``ORU^R01`` says, as plain values."""

    control_id: str
    now: datetime.datetime
    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    patient_id: str
    issuer: str  # DICOM IssuerOfPatientID, as PID-3.4 (assigning authority)
    patient_name: str  # DICOM PN
    birth_date: datetime.date | None
    sex: str
    accession_number: str
    placer_order_number: str
    filler_order_number: str
    requested_procedure_id: str
    procedure: str
    referring_physician: str  # DICOM PN
    observed: datetime.datetime | None  # when the images were taken
    signed: datetime.datetime
    status: str  # FINAL or CORRECTED
    findings: str
    impression: str
    amendment_reason: str
    doctor: Doctor
    link: str  # the study's absolute URL in the portal, or ''


def oru(facts: ResultFacts) -> str:
    """The message text (segments separated by ``\\r``), without MLLP framing."""
    signed = timestamp(facts.signed)
    referring = _xcn("", facts.referring_physician)
    doctor = facts.doctor
    msh = ["MSH", "^~\\&", escape(facts.sending_application), escape(facts.sending_facility),
           escape(facts.receiving_application), escape(facts.receiving_facility),
           timestamp(facts.now), "", "ORU^R01^ORU_R01", escape(facts.control_id), "P",
           VERSION, "", "", "", "", "", "UNICODE UTF-8"]
    sex = facts.sex if facts.sex in ("F", "M", "O") else ""
    pid = ["PID", "1", "", f"{escape(facts.patient_id)}^^^{escape(facts.issuer)}^MR", "",
           _components(person_name(facts.patient_name)),
           "", facts.birth_date.strftime("%Y%m%d") if facts.birth_date else "", sex]
    placer, filler = escape(facts.placer_order_number), escape(facts.filler_order_number)
    orc = ["ORC", "RE", placer, filler, "", "CM", "", "", "", timestamp(facts.now), "", "",
           referring]
    obr = [""] * 33
    obr[0:8] = ["OBR", "1", placer, filler, f"^{escape(facts.procedure)}", "", "",
                timestamp(facts.observed)]
    obr[16] = referring
    obr[18] = escape(facts.accession_number)
    obr[19] = escape(facts.requested_procedure_id)
    obr[22] = signed
    obr[24] = "RAD"
    obr[25] = facts.status
    obr[32] = _xcn(doctor.professional_id, doctor.name, "&")
    segments = ["|".join(msh), "|".join(pid), "|".join(orc), "|".join(obr).rstrip("|")]
    segments += [f"NTE|{n}|L|{escape(line)}"
                 for n, line in enumerate(lines(facts.amendment_reason), start=1)]
    observer = _xcn(doctor.professional_id, doctor.name)
    observations = [("TX", FINDINGS, escape(line)) for line in lines(facts.findings)]
    observations += [("TX", IMPRESSION, escape(line)) for line in lines(facts.impression)]
    if facts.link:
        observations.append(("RP", STUDY_LINK, f"{escape(facts.link)}^PORTAL^TEXT^HTML"))
    for n, (kind, code, value) in enumerate(observations, start=1):
        segments.append("|".join(["OBX", str(n), kind, code, "1", value, "", "", "", "", "",
                                  facts.status, "", "", signed, "", observer]))
    return "\r".join(segments) + "\r"


@dataclass(frozen=True)
class Verdict:
    delivered: bool
    code: str  # MSA-1, '' when the answer was not an acknowledgement
    reason: str  # why it does not count as delivered ('' when it does)


def read_acknowledgement(text: str, control_id: str) -> Verdict:
    """Whether ``text`` acknowledges message ``control_id``: delivered only on MSA-1 AA
    (or CA) with MSA-2 naming it; AE/AR/CE/CR and anything else say why not."""
    try:
        message = hl7.parse(text.replace("\n", "\r"))
        msa = message.segment("MSA")
    except (hl7.ParseException, KeyError, IndexError, ValueError) as exc:
        return Verdict(False, "", f"the answer is not an HL7 acknowledgement ({exc})")

    def field(segment: hl7.Segment, n: int) -> str:
        return message.unescape(str(segment[n])) if len(segment) > n else ""

    code, acknowledged = field(msa, 1).strip().upper()[:2], field(msa, 2).strip()
    if acknowledged != control_id:
        return Verdict(False, code, f"the acknowledgement ({code or 'no code'}) is for "
                                    f"message {acknowledged or '(none)'}, not {control_id}")
    if code in DELIVERED:
        return Verdict(True, code, "")
    said = field(msa, 3).strip()
    if not said:
        try:
            said = field(message.segment("ERR"), 8).strip()
        except KeyError:
            pass
    return Verdict(False, code, f"{code or 'no code'}: {said or 'no reason given'}")
