"""Modality Worklist C-FIND (PS3.4 K): the scheduled procedures a modality asks for.

Matches on ScheduledStationAETitle, Modality and ScheduledProcedureStepStartDate (single
date or range) inside the Scheduled Procedure Step Sequence, and on PatientID, PatientName
(``*``/``?`` wildcards, any case) and AccessionNumber; only procedures still scheduled, of
the patients the access policy lets the caller see. Each answer carries the keys asked.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

from django.db.models import F, Q, QuerySet
from django.db.models.functions import Upper
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from imaging.principals import Principal
from imaging.query import DicomWildcard

from .listing import visible_procedures
from .models import ScheduledProcedure


class WorklistError(ValueError):
    pass


def _value(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _text(path: str, value: str, *, any_case: bool = False) -> Q:
    if not value or value == "*":
        return Q()
    if any_case:
        return Q(DicomWildcard(Upper(F(path)), value.upper()))
    if "*" in value or "?" in value:
        return Q(DicomWildcard(F(path), value))
    return Q(**{path: value})


def _date(text: str) -> datetime.date:
    try:
        return datetime.datetime.strptime(text.strip(), "%Y%m%d").date()
    except ValueError:
        raise WorklistError(f"{text!r} is not a date (YYYYMMDD)") from None


def _dates(value: str) -> Q:
    if not value:
        return Q()
    if "-" not in value:
        return Q(scheduled_date=_date(value))
    low, _, high = value.partition("-")
    condition = Q()
    if low.strip():
        condition &= Q(scheduled_date__gte=_date(low))
    if high.strip():
        condition &= Q(scheduled_date__lte=_date(high))
    return condition


def matches(principal: Principal, identifier: Dataset) -> QuerySet[ScheduledProcedure]:
    """The scheduled procedures the identifier asks for, among those ``principal`` sees."""
    steps = identifier.get("ScheduledProcedureStepSequence") or [Dataset()]
    step = steps[0]
    condition = (
        _text("patient__patient_id", _value(identifier, "PatientID"))
        & _text("patient__name", _value(identifier, "PatientName"), any_case=True)
        & _text("accession_number", _value(identifier, "AccessionNumber"))
        & _text("scheduled_station_ae_title", _value(step, "ScheduledStationAETitle"))
        & _text("modality", _value(step, "Modality"))
        & _dates(_value(step, "ScheduledProcedureStepStartDate"))
    )
    return (visible_procedures(principal).select_related("patient")
            .filter(status=ScheduledProcedure.Status.SCHEDULED)
            .filter(condition).order_by("scheduled_date", "scheduled_time", "pk"))


def _fill(answer: Dataset, keywords: list[str], values: dict[str, Any]) -> None:
    for keyword in keywords:
        setattr(answer, keyword, values.get(keyword))


def answer(procedure: ScheduledProcedure, identifier: Dataset) -> Dataset:
    patient = procedure.patient
    top = {
        "PatientName": patient.name, "PatientID": patient.patient_id,
        "PatientBirthDate": patient.birth_date.strftime("%Y%m%d") if patient.birth_date
        else "", "PatientSex": patient.sex, "AccessionNumber": procedure.accession_number,
        "RequestedProcedureID": procedure.requested_procedure_id,
        "RequestedProcedureDescription": procedure.requested_procedure_description,
        "ReferringPhysicianName": procedure.referring_physician,
        "RequestedProcedurePriority": procedure.priority,
    }
    step = {
        "ScheduledStationAETitle": procedure.scheduled_station_ae_title,
        "Modality": procedure.modality,
        "ScheduledProcedureStepStartDate": procedure.scheduled_date.strftime("%Y%m%d"),
        "ScheduledProcedureStepStartTime": procedure.scheduled_time.strftime("%H%M%S")
        if procedure.scheduled_time else "",
        "ScheduledProcedureStepID": procedure.requested_procedure_id,
        "ScheduledProcedureStepDescription": procedure.requested_procedure_description,
        "ScheduledProcedureStepStatus": "SCHEDULED",
    }
    out = Dataset()
    out.SpecificCharacterSet = "ISO_IR 192"
    asked = [e.keyword for e in identifier
             if e.keyword and e.keyword not in ("SpecificCharacterSet",
                                                "ScheduledProcedureStepSequence")]
    _fill(out, asked, top)
    if "ScheduledProcedureStepSequence" in identifier:
        item = Dataset()
        requested = identifier.ScheduledProcedureStepSequence
        keys = [e.keyword for e in requested[0] if e.keyword] if requested else list(step)
        _fill(item, keys, step)
        out.ScheduledProcedureStepSequence = Sequence([item])
    return out


def answers(principal: Principal, identifier: Dataset) -> Iterator[tuple[ScheduledProcedure,
                                                                       Dataset]]:
    for procedure in matches(principal, identifier):
        yield procedure, answer(procedure, identifier)
