"""Read and search, per resource type, through the one access policy and the one audit
call, as DICOMweb does (``dicomweb.qido``, ``dicomweb.wado``).

- A search starts from what the caller may see (``policies.visible_studies`` /
  ``visible_patients``), so what is not visible is never counted nor returned; the page
  returned is recorded with one audit entry per patient in it, as a QIDO search is
  (``imaging.access.record_search``).
- A read asks ``imaging.access`` (``reports.reading`` for a report), which decides and
  records; unknown and refused ids are both a 404, so existence never leaks.
- DiagnosticReport is the current final version of a study's report (the one every reader
  of the patient's data sees, ``reports.reading.for_everyone``); drafts never appear.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import Http404
from fhir.resources.R4B.bundle import Bundle
from fhir_core.fhirabstractmodel import FHIRAbstractModel

from audit.models import AuditAction, Outcome
from audit.trail import Actor, Target, record
from imaging import access, policies
from imaging.models import Series, Study
from imaging.principals import Principal
from imaging.search_text import searchable
from reports import reading
from reports.models import Report

from . import resources
from .params import Search, SearchError, Token, alternatives, date_q, reference_ids, tokens
from .resources import (
    DCM,
    DICOM_UID,
    OID_PATTERN,
    URI_PATTERN,
    Urls,
    issuers_for_system,
)

NOTHING = Q(pk__in=[])


@dataclass(frozen=True)
class Result:
    total: int
    resources: list[FHIRAbstractModel]


@dataclass(frozen=True)
class Kind:
    """A resource type this server offers: its search parameters (name: FHIR type, the
    chains and modifiers spelled out) and how it is read and searched."""

    name: str
    parameters: dict[str, str]
    read: Callable[[Principal, Actor, str, Urls], FHIRAbstractModel]
    search: Callable[[Principal, Actor, Search, Urls], Result]


# --- matching ------------------------------------------------------------------------------


def _pks(ids: list[str]) -> list[int]:
    return [int(i) for i in ids if i.isdigit() and len(i) < 19]


def _patient_identifier(prefix: str, value: str) -> Q:
    match = NOTHING
    for token in tokens(value):
        one = Q(**{f"{prefix}patient_id": token.code})
        if token.system == "":
            # No system: no issuer, or one that is a plain name (resources.issuer_system).
            one &= (~Q(**{f"{prefix}issuer__regex": OID_PATTERN})
                    & ~Q(**{f"{prefix}issuer__regex": URI_PATTERN}))
        elif token.system is not None:
            one &= Q(**{f"{prefix}issuer__in": issuers_for_system(token.system)})
        match |= one
    return match


def _uid(token: Token) -> str:
    return token.code[8:] if token.code.startswith("urn:oid:") else token.code


def _identifier(value: str, uid_column: str, accession_column: str) -> Q:
    """A DICOM UID (``urn:dicom:uid|urn:oid:1.2...``) or an accession number (no system)."""
    match = NOTHING
    for token in tokens(value):
        if token.system is None:
            match |= Q(**{uid_column: _uid(token)}) | Q(**{accession_column: token.code})
        elif token.system == DICOM_UID:
            match |= Q(**{uid_column: _uid(token)})
        elif token.system == "":
            match |= Q(**{accession_column: token.code})
    return match


def _modality(value: str) -> Q:
    codes = [t.code for t in tokens(value) if t.system in (None, DCM)]
    if not codes:
        return NOTHING
    return Q(Exists(Series.objects.filter(study=OuterRef("pk"), modality__in=codes)))


def _name(value: str) -> Q:
    """Every word of one alternative somewhere in the name (accents and case aside)."""
    match = NOTHING
    for alternative in alternatives(value):
        words = Q()
        for word in searchable(alternative).split():
            words &= Q(name_search__contains=word)
        match |= words
    return match


def _study_filter(name: str, value: str) -> Q:
    if name == "_id":
        return Q(study_instance_uid__in=alternatives(value))
    if name in ("patient", "subject"):
        return Q(patient_id__in=_pks(reference_ids(value, "Patient")))
    if name in ("patient.identifier", "subject:Patient.identifier"):
        return _patient_identifier("patient__", value)
    if name == "identifier":
        return _identifier(value, "study_instance_uid", "accession_number")
    if name == "date":
        return date_q("study_date", value)
    if name == "modality":
        return _modality(value)
    raise SearchError(f"search parameter {name!r} is not supported")


def _patient_filter(name: str, value: str) -> Q:
    if name == "_id":
        return Q(pk__in=_pks(alternatives(value)))
    if name == "identifier":
        return _patient_identifier("", value)
    if name in ("name", "name:contains"):
        return _name(value)
    if name == "birthdate":
        return date_q("birth_date", value)
    raise SearchError(f"search parameter {name!r} is not supported")


def _report_filter(name: str, value: str) -> Q:
    if name == "_id":
        return Q(pk__in=_pks(alternatives(value)))
    if name in ("patient", "subject"):
        return Q(study__patient_id__in=_pks(reference_ids(value, "Patient")))
    if name in ("patient.identifier", "subject:Patient.identifier"):
        return _patient_identifier("study__patient__", value)
    if name == "identifier":
        return _identifier(value, "instance__sop_instance_uid", "study__accession_number")
    if name == "date":
        return date_q("study__study_date", value)
    if name == "status":
        wanted = {t.code for t in tokens(value)}
        match = NOTHING
        if "final" in wanted:
            match |= Q(amendment=False)
        if "amended" in wanted:
            match |= Q(amendment=True)
        return match
    raise SearchError(f"search parameter {name!r} is not supported")


def _filtered(rows: QuerySet[Any], search: Search, match: Callable[[str, str], Q]
              ) -> QuerySet[Any]:
    for name, value in search.applied:
        rows = rows.filter(match(name, value))
    return rows


def _query_detail(kind: str, search: Search) -> dict[str, Any]:
    return {"fhir": kind, "params": [list(p) for p in search.applied],
            "count": search.count, "offset": search.offset}


def _page(rows: QuerySet[Any], search: Search) -> tuple[int, list[Any]]:
    total = rows.count()
    page = list(rows[search.offset: search.offset + search.count]) if search.count else []
    return total, page


# --- ImagingStudy --------------------------------------------------------------------------


def read_imaging_study(principal: Principal, actor: Actor, resource_id: str, urls: Urls
                       ) -> FHIRAbstractModel:
    study = access.get_or_404(principal, actor, AuditAction.VIEW, "study", resource_id)
    assert isinstance(study, Study)
    return resources.imaging_studies([study], urls)[0]


def search_imaging_studies(principal: Principal, actor: Actor, search: Search, urls: Urls
                           ) -> Result:
    studies = _filtered(policies.visible_studies(principal), search, _study_filter)
    total, page = _page(studies.order_by("-study_date", "-study_time", "pk"), search)
    access.record_search(actor, page, query=_query_detail("ImagingStudy", search))
    return Result(total, list(resources.imaging_studies(page, urls)))


# --- Patient -------------------------------------------------------------------------------


def read_patient(principal: Principal, actor: Actor, resource_id: str, urls: Urls
                 ) -> FHIRAbstractModel:
    pks = _pks([resource_id])
    if not pks:
        record(AuditAction.VIEW, actor, Target(level="patient"), Outcome.FAILED,
               reason="no such object", detail={"fhir_id": resource_id[:64]})
        raise Http404
    return resources.patient(access.patient_or_404(principal, actor, AuditAction.VIEW, pks[0]))


def search_patients(principal: Principal, actor: Actor, search: Search, urls: Urls) -> Result:
    patients = _filtered(policies.visible_patients(principal).select_related("clinic"),
                         search, _patient_filter)
    total, page = _page(patients.order_by("name_search", "pk"), search)
    # One entry per patient returned (one saying so when none was), as record_search.
    detail = {"query": _query_detail("Patient", search), "hits": len(page)}
    record(AuditAction.SEARCH, actor, [Target.patient(p) for p in page] or None,
           Outcome.ALLOWED, detail=detail)
    return Result(total, [resources.patient(p) for p in page])


# --- DiagnosticReport ----------------------------------------------------------------------


def _final_reports() -> QuerySet[Report]:
    return (Report.objects.filter(status=Report.Status.FINAL, superseded__isnull=True)
            .select_related("study__patient", "instance"))


def read_diagnostic_report(principal: Principal, actor: Actor, resource_id: str, urls: Urls
                           ) -> FHIRAbstractModel:
    pks = _pks([resource_id])
    report = _final_reports().filter(pk=pks[0]).first() if pks else None
    if report is None:
        record(AuditAction.VIEW, actor, Target("report", resource_id[:64]), Outcome.FAILED,
               reason="no such report")
        raise Http404
    if not reading.authorize(principal, actor, AuditAction.VIEW, report):
        raise Http404
    return resources.diagnostic_report(report)


def search_diagnostic_reports(principal: Principal, actor: Actor, search: Search, urls: Urls
                              ) -> Result:
    visible = policies.visible_studies(principal).values("pk")
    reports = _filtered(_final_reports().filter(study__in=visible), search, _report_filter)
    total, page = _page(reports.order_by("-signed", "-pk"), search)
    access.record_search(actor, [r.study for r in page],
                         query=_query_detail("DiagnosticReport", search))
    return Result(total, [resources.diagnostic_report(r) for r in page])


PATIENT_CHAIN = {"patient": "reference", "subject": "reference",
                 "patient.identifier": "token", "subject:Patient.identifier": "token"}
KINDS = {kind.name: kind for kind in (
    Kind("ImagingStudy",
         {"_id": "token", **PATIENT_CHAIN, "identifier": "token", "date": "date",
          "modality": "token"},
         read_imaging_study, search_imaging_studies),
    Kind("Patient",
         {"_id": "token", "identifier": "token", "name": "string", "name:contains": "string",
          "birthdate": "date"},
         read_patient, search_patients),
    Kind("DiagnosticReport",
         {"_id": "token", **PATIENT_CHAIN, "identifier": "token", "date": "date",
          "status": "token"},
         read_diagnostic_report, search_diagnostic_reports),
)}


def searchset(kind: Kind, search: Search, result: Result, urls: Urls) -> Bundle:
    """The page as a searchset Bundle: its total, and self, next and previous links that
    carry the parameters applied."""
    base = f"{urls.fhir}/{kind.name}"

    def at(offset: int) -> str:
        return f"{base}?" + urlencode([*search.applied, ("_count", str(search.count)),
                                       ("_offset", str(offset))])

    links = [{"relation": "self", "url": at(search.offset)}]
    if search.count and search.offset + search.count < result.total:
        links.append({"relation": "next", "url": at(search.offset + search.count)})
    if search.offset > 0 and search.count:
        links.append({"relation": "previous",
                      "url": at(max(0, search.offset - search.count))})
    entries = [{"fullUrl": urls.of(kind.name, str(r.id)),  # type: ignore[attr-defined]
                "resource": r, "search": {"mode": "match"}} for r in result.resources]
    return Bundle.model_validate(dict(type="searchset", total=result.total, link=links,
                                      entry=entries or None))
