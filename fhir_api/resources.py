"""Archive rows as FHIR resources, every one built (and so validated) through the
``fhir.resources`` R4B models, whose ImagingStudy, Patient, DiagnosticReport and Endpoint
are R4's.

Ids: an ImagingStudy is its Study Instance UID (a valid FHIR id: digits and dots, at most
64), a Patient its row's key, a DiagnosticReport its report version's key.
"""

from __future__ import annotations

import base64
import datetime
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import Prefetch
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.endpoint import Endpoint
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.patient import Patient as FhirPatient

from imaging.models import Instance, Patient, Series, Study
from reports.models import Report

DCM = "http://dicom.nema.org/resources/ontology/DCM"
DICOM_UID = "urn:dicom:uid"
RFC3986 = "urn:ietf:rfc:3986"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
CONNECTION_TYPE = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
LOINC = "http://loinc.org"
DIAGNOSTIC_SERVICE = "http://terminology.hl7.org/CodeSystem/v2-0074"
ENDPOINT_ID = "dicomweb"
GENDERS = {"M": "male", "F": "female", "O": "other"}
#: Issuers of Patient ID that are identifier systems (as the database matches them too).
OID_PATTERN = r"^[0-2](\.(0|[1-9][0-9]*))+$"
URI_PATTERN = r"^[A-Za-z][A-Za-z0-9+.-]*:"
_OID = re.compile(OID_PATTERN)
_TIME = re.compile(r"(\d{2})(\d{2})?(\d{2})?")


@dataclass(frozen=True)
class Urls:
    """Absolute base URLs of this server, as the client reached it."""

    fhir: str
    dicomweb: str

    def of(self, resource_type: str, resource_id: str) -> str:
        return f"{self.fhir}/{resource_type}/{resource_id}"


def issuer_system(issuer: str) -> str | None:
    """The identifier system for a DICOM Issuer of Patient ID: an OID as ``urn:oid:``, a URI
    as it is; a plain name is no system (it is given as the assigner instead)."""
    if _OID.match(issuer):
        return f"urn:oid:{issuer}"
    if re.match(URI_PATTERN, issuer):
        return issuer
    return None


def issuers_for_system(system: str) -> list[str]:
    """The stored issuers that :func:`issuer_system` turns into ``system``."""
    if system.startswith("urn:oid:") and _OID.match(system[8:]):
        return [system[8:], system]
    return [system]


def _started(study: Study) -> datetime.datetime | datetime.date | None:
    """The study date and time in the portal's zone (DICOM keeps local times without an
    offset; FHIR wants one whenever a time is given)."""
    if study.study_date is None:
        return None
    match = _TIME.match(study.study_time or "")
    if match is None:
        return study.study_date
    hour, minute, second = (int(g or 0) for g in match.groups())
    try:
        return datetime.datetime.combine(
            study.study_date, datetime.time(hour, minute, second),
            tzinfo=ZoneInfo(settings.TIME_ZONE))
    except ValueError:
        return study.study_date


def _patient_reference(patient: Patient) -> dict[str, object]:
    return {"reference": f"Patient/{patient.pk}", "display": _readable_name(patient.name)}


def _readable_name(name: str) -> str:
    components = name.split("=")[0].split("^")
    family = components[0] if components else ""
    given = " ".join(c for c in components[1:3] if c)
    return " ".join(p for p in (given, family) if p)


def endpoint(urls: Urls) -> Endpoint:
    """Where the study's images are: this portal's DICOMweb base URL (WADO-RS)."""
    return Endpoint.model_validate(dict(
        id=ENDPOINT_ID, status="active",
        connectionType={"system": CONNECTION_TYPE, "code": "dicom-wado-rs"},
        payloadType=[{"text": "DICOM"}],
        payloadMimeType=["application/dicom"],
        address=urls.dicomweb,
    ))


def _instances_by_series(studies: list[Study]) -> dict[int, list[Series]]:
    instances = Instance.objects.only(
        "sop_instance_uid", "sop_class_uid", "instance_number", "series_id",
    ).order_by("instance_number", "pk")
    series = (Series.objects.filter(study__in=[s.pk for s in studies])
              .order_by("series_number", "pk")
              .prefetch_related(Prefetch("instances", queryset=instances)))
    by_study: dict[int, list[Series]] = defaultdict(list)
    for one in series:
        by_study[one.study_id].append(one)
    return by_study


def imaging_studies(studies: Iterable[Study], urls: Urls) -> list[ImagingStudy]:
    """The studies (their patients selected) with their series and instances, in two
    queries whatever their number."""
    rows = list(studies)
    series = _instances_by_series(rows)
    return [imaging_study(study, series.get(study.pk, []), urls) for study in rows]


def imaging_study(study: Study, series: list[Series], urls: Urls) -> ImagingStudy:
    identifiers: list[dict[str, object]] = [
        {"system": DICOM_UID, "value": f"urn:oid:{study.study_instance_uid}"}]
    if study.accession_number:
        identifiers.append({
            "type": {"coding": [{"system": V2_0203, "code": "ACSN"}]},
            "value": study.accession_number,
        })
    modalities = sorted({s.modality for s in series if s.modality})
    summaries = []
    for one in series:
        instances = list(one.instances.all())
        summary: dict[str, object] = {
            "uid": one.series_instance_uid,
            "modality": {"system": DCM, "code": one.modality or "OT"},
            "numberOfInstances": len(instances),
        }
        if one.series_number is not None:
            summary["number"] = one.series_number
        if one.description:
            summary["description"] = one.description
        if one.body_part:
            summary["bodySite"] = {"display": one.body_part}
        if instances:
            summary["instance"] = [
                {"uid": i.sop_instance_uid,
                 "sopClass": {"system": RFC3986, "code": f"urn:oid:{i.sop_class_uid}"},
                 **({"number": i.instance_number} if i.instance_number is not None else {})}
                for i in instances
            ]
        summaries.append(summary)
    return ImagingStudy.model_validate(dict(
        id=study.study_instance_uid,
        contained=[endpoint(urls)],
        identifier=identifiers,
        status="available",
        modality=[{"system": DCM, "code": code} for code in modalities] or None,
        subject=_patient_reference(study.patient),
        started=_started(study),
        endpoint=[{"reference": f"#{ENDPOINT_ID}"}],
        numberOfSeries=len(series),
        numberOfInstances=sum(len(s.instances.all()) for s in series),
        description=study.description or None,
        series=summaries or None,
    ))


def _human_name(name: str) -> dict[str, object] | None:
    """A DICOM person name (``Family^Given^Middle^Prefix^Suffix``, its alphabetic group)."""
    components = name.split("=")[0].split("^") + [""] * 5
    family, given, middle, prefix, suffix = (c.strip() for c in components[:5])
    if not any((family, given, middle, prefix, suffix)):
        return None
    human: dict[str, object] = {"use": "official", "text": _readable_name(name)}
    if family:
        human["family"] = family
    if given or middle:
        human["given"] = [g for g in (given, middle) if g]
    if prefix:
        human["prefix"] = [prefix]
    if suffix:
        human["suffix"] = [suffix]
    return human


def patient_identifier(patient: Patient) -> dict[str, object]:
    identifier: dict[str, object] = {
        "use": "usual",
        "type": {"coding": [{"system": V2_0203, "code": "MR"}]},
        "value": patient.patient_id,
    }
    if patient.issuer:
        system = issuer_system(patient.issuer)
        if system:
            identifier["system"] = system
        identifier["assigner"] = {"display": patient.issuer}
    return identifier


def patient(row: Patient) -> FhirPatient:
    human = _human_name(row.name)
    clinic = row.clinic
    return FhirPatient.model_validate(dict(
        id=str(row.pk),
        identifier=[patient_identifier(row)] if row.patient_id else None,
        name=[human] if human else None,
        gender=GENDERS.get(row.sex.strip().upper(), "unknown"),
        birthDate=row.birth_date,
        managingOrganization={"display": clinic.name} if clinic is not None else None,
    ))


def diagnostic_report(report: Report) -> DiagnosticReport:
    """A current final version (the one every reader of the patient's data sees)."""
    study = report.study
    text = "\n\n".join(part for part in (report.findings, report.impression) if part)
    identifiers: list[dict[str, object]] = [
        {"system": DICOM_UID, "value": f"urn:oid:{report.instance.sop_instance_uid}"}]
    if study.accession_number:
        identifiers.append({
            "type": {"coding": [{"system": V2_0203, "code": "ACSN"}]},
            "value": study.accession_number,
        })
    signer = {"display": report.author_name,
              **({"identifier": {"value": report.author_professional_id}}
                 if report.author_professional_id else {})}
    return DiagnosticReport.model_validate(dict(
        id=str(report.pk),
        identifier=identifiers,
        status="amended" if report.amendment else "final",
        category=[{"coding": [{"system": DIAGNOSTIC_SERVICE, "code": "RAD",
                               "display": "Radiology"}]}],
        code={"coding": [{"system": LOINC, "code": "18748-4",
                          "display": "Diagnostic imaging study"}]},
        subject=_patient_reference(study.patient),
        effectiveDateTime=_started(study),
        issued=report.signed,
        performer=[signer],
        resultsInterpreter=[signer],
        imagingStudy=[{"reference": f"ImagingStudy/{study.study_instance_uid}"}],
        conclusion=report.impression or None,
        presentedForm=[{
            "contentType": "text/plain; charset=utf-8",
            "data": base64.b64encode(text.encode()).decode(),
            "creation": report.signed,
        }] if text else None,
    ))
