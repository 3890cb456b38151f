"""Modality Performed Procedure Step (PS3.4 F): what a modality reports it did for an order.

N-CREATE (status IN PROGRESS) records the step and puts the order it names in progress;
N-SET to COMPLETED completes the order, to DISCONTINUED puts it back on the worklist with
the reason kept on the step. A step is matched to its order through the Scheduled Step
Attributes Sequence: the accession number, else the requested procedure ID, else the Study
Instance UID of an order's linked study; always of the patient named and among the orders
the caller may store for. A step that matches no order is kept (an unscheduled step).

The DIMSE side (:mod:`dimse.mpps`) maps the errors here to statuses.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone
from pydicom.dataset import Dataset

from imaging import policies
from imaging.policies import Action
from imaging.principals import Principal

from .models import PerformedProcedureStep, ScheduledProcedure

STATUSES = {s.value for s in PerformedProcedureStep.Status}
FINAL = {PerformedProcedureStep.Status.COMPLETED, PerformedProcedureStep.Status.DISCONTINUED}


class MppsError(Exception):
    """A request refused; ``kind`` says which status (dimse.mpps)."""

    kind = "invalid"


class Duplicate(MppsError):
    kind = "duplicate"


class NoSuchInstance(MppsError):
    kind = "no_such_instance"


class NoLongerUpdatable(MppsError):
    kind = "final"


class NotAllowed(MppsError):
    kind = "not_allowed"


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _when(ds: Dataset, date_keyword: str, time_keyword: str) -> datetime.datetime | None:
    day, clock = _text(ds, date_keyword), _text(ds, time_keyword)
    if not day:
        return None
    try:
        date = datetime.datetime.strptime(day, "%Y%m%d").date()
    except ValueError:
        raise MppsError(f"{date_keyword} {day!r} is not a date (YYYYMMDD)") from None
    digits = clock.split(".")[0]
    try:
        moment = (datetime.datetime.strptime(digits.ljust(6, "0")[:6], "%H%M%S").time()
                  if digits else datetime.time())
    except ValueError:
        raise MppsError(f"{time_keyword} {clock!r} is not a time (HHMMSS)") from None
    return timezone.make_aware(datetime.datetime.combine(date, moment))


def _series(ds: Dataset) -> list[dict[str, Any]]:
    return [{"series_instance_uid": _text(item, "SeriesInstanceUID"),
             "images": [_text(image, "ReferencedSOPInstanceUID")
                        for image in item.get("ReferencedImageSequence") or []]}
            for item in ds.get("PerformedSeriesSequence") or []]


def _as_json(ds: Dataset) -> dict[str, Any]:
    """The dataset as DICOM JSON (PS3.18 F), binary values left out: for review."""
    try:
        found: dict[str, Any] = json.loads(ds.to_json(
            bulk_data_threshold=1024, bulk_data_element_handler=lambda _e: ""))
    except Exception as exc:  # an undecodable value: keep the rest reviewable
        return {"unreadable": str(exc)}
    return found


def _status(ds: Dataset) -> str:
    status = _text(ds, "PerformedProcedureStepStatus")
    if status not in STATUSES:
        raise MppsError(f"Performed Procedure Step Status {status!r} is not one of "
                        f"{', '.join(sorted(STATUSES))}")
    return status


def _order(principal: Principal, patient_id: str, step: Dataset) -> ScheduledProcedure | None:
    """The order the scheduled step names, or None; NotAllowed when it is one the caller may
    not store for (another clinic's)."""
    orders = ScheduledProcedure.objects.select_related("patient")
    if patient_id:
        orders = orders.filter(patient__patient_id=patient_id)
    accession = _text(step, "AccessionNumber")
    requested = _text(step, "RequestedProcedureID")
    study_uid = _text(step, "StudyInstanceUID")
    if accession:
        found = list(orders.filter(accession_number=accession))
    elif requested:
        found = list(orders.filter(requested_procedure_id=requested))
    elif study_uid:
        found = list(orders.filter(study__study_instance_uid=study_uid))
    else:
        return None
    allowed = [o for o in found if policies.decide(principal, Action.STORE, o.patient)]
    if found and not allowed:
        raise NotAllowed("the scheduled procedure is not one this peer may report on")
    return allowed[0] if len(allowed) == 1 else None


def create(principal: Principal, sop_instance_uid: str, ds: Dataset, *,
           calling_ae: str = "") -> PerformedProcedureStep:
    """N-CREATE: record the step (it must be IN PROGRESS) and start its order."""
    if not sop_instance_uid:
        raise MppsError("the N-CREATE names no Affected SOP Instance UID")
    if _status(ds) != PerformedProcedureStep.Status.IN_PROGRESS:
        raise MppsError("a performed procedure step is created IN PROGRESS")
    if PerformedProcedureStep.objects.filter(sop_instance_uid=sop_instance_uid).exists():
        raise Duplicate(f"performed procedure step {sop_instance_uid} exists")
    steps = ds.get("ScheduledStepAttributesSequence") or [Dataset()]
    patient_id = _text(ds, "PatientID")
    order = _order(principal, patient_id, steps[0])
    try:
        with transaction.atomic():
            step = PerformedProcedureStep.objects.create(
                sop_instance_uid=sop_instance_uid, procedure=order,
                accession_number=_text(steps[0], "AccessionNumber")[:16],
                requested_procedure_id=_text(steps[0], "RequestedProcedureID")[:16],
                study_instance_uid=_text(steps[0], "StudyInstanceUID")[:64],
                patient_id=patient_id[:64], modality=_text(ds, "Modality")[:16],
                station_ae_title=_text(ds, "PerformedStationAETitle")[:16],
                calling_ae_title=calling_ae[:16],
                started=_when(ds, "PerformedProcedureStepStartDate",
                              "PerformedProcedureStepStartTime"),
                performed_series=_series(ds), attributes=_as_json(ds))
            if order is not None and order.status == ScheduledProcedure.Status.SCHEDULED:
                order.status = ScheduledProcedure.Status.IN_PROGRESS
                order.save(update_fields=["status", "updated"])
    except IntegrityError:  # created meanwhile by another association
        raise Duplicate(f"performed procedure step {sop_instance_uid} exists") from None
    return step


def find(principal: Principal, sop_instance_uid: str, *,
         calling_ae: str = "") -> PerformedProcedureStep:
    """The step, if the caller may update it; NoSuchInstance otherwise (another clinic's
    step is not disclosed). An unscheduled step (no order, so no patient to decide on) is
    updated only by the AE that created it."""
    step = (PerformedProcedureStep.objects.select_related("procedure__patient")
            .filter(sop_instance_uid=sop_instance_uid).first())
    if step is None:
        raise NoSuchInstance(f"no performed procedure step {sop_instance_uid}")
    order = step.procedure
    if order is None:
        allowed = step.calling_ae_title == calling_ae[:16]
    else:
        allowed = bool(policies.decide(principal, Action.STORE, order.patient))
    if not allowed:
        raise NoSuchInstance(f"no performed procedure step {sop_instance_uid}")
    return step


def update(principal: Principal, sop_instance_uid: str, changes: Dataset, *,
           calling_ae: str = "") -> PerformedProcedureStep:
    """N-SET: update the step; COMPLETED completes its order, DISCONTINUED puts the order
    back on the worklist. A step already completed or discontinued is not updated."""
    with transaction.atomic():
        step = find(principal, sop_instance_uid, calling_ae=calling_ae)
        step = PerformedProcedureStep.objects.select_for_update().get(pk=step.pk)
        if step.status in FINAL:
            # The Error Comment of PS3.4 Table F.7.2-2, word for word.
            raise NoLongerUpdatable("Performed Procedure Step Object may no longer be updated")
        status = _status(changes) if "PerformedProcedureStepStatus" in changes \
            else step.status
        attributes = step.attributes
        attributes.update(_as_json(changes))
        step.attributes = attributes
        step.status = status
        if "PerformedSeriesSequence" in changes:
            step.performed_series = _series(changes)
        ended = _when(changes, "PerformedProcedureStepEndDate",
                      "PerformedProcedureStepEndTime")
        if ended is not None:
            step.ended = ended
        elif status in FINAL and step.ended is None:
            step.ended = timezone.now()
        if status == PerformedProcedureStep.Status.DISCONTINUED:
            step.discontinuation_reason = _reason(changes)[:200]
        step.save()
        order = step.procedure
        if order is not None and status in FINAL:
            order.status = (ScheduledProcedure.Status.COMPLETED
                            if status == PerformedProcedureStep.Status.COMPLETED
                            else ScheduledProcedure.Status.SCHEDULED)
            order.save(update_fields=["status", "updated"])
    return step


def _reason(ds: Dataset) -> str:
    codes = ds.get("PerformedProcedureStepDiscontinuationReasonCodeSequence") or []
    return "; ".join(_text(code, "CodeMeaning") or _text(code, "CodeValue")
                     for code in codes) or "no reason given"
