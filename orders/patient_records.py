"""Patient records changed by the clinic's EHR: demographics updated, two records merged.

The index is what the archive serves: QIDO-RS and C-FIND answer patient attributes from the
patient row, and WADO-RS metadata from each instance's stored DICOM JSON (the index's copy
of the header, never the file). :func:`follow_index` is the one place that makes that JSON
say what the patient row says, so every way out agrees after an update or a merge; the
original files are never touched (the study page's header view still shows what the
modality wrote).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from accounts.models import AccessGrant
from audit.models import AuditAction, Outcome
from audit.trail import Actor, Target, record
from imaging.models import Instance, Patient, Study

from .models import ScheduledProcedure

BATCH = 500
# DICOM JSON tags of the patient attributes the index holds.
PATIENT_NAME, PATIENT_ID, BIRTH_DATE, SEX = "00100010", "00100020", "00100030", "00100040"


def _elements(patient: Patient) -> dict[str, dict[str, Any]]:
    def value(vr: str, text: str | None) -> dict[str, Any]:
        return {"vr": vr, "Value": [text]} if text else {"vr": vr}

    name: dict[str, Any] = ({"vr": "PN", "Value": [{"Alphabetic": patient.name}]}
                            if patient.name else {"vr": "PN"})
    return {
        PATIENT_NAME: name,
        PATIENT_ID: value("LO", patient.patient_id),
        BIRTH_DATE: value("DA", patient.birth_date.strftime("%Y%m%d")
                          if patient.birth_date else None),
        SEX: value("CS", patient.sex),
    }


def follow_index(patient: Patient) -> int:
    """Rewrite the patient attributes in the stored metadata of ``patient``'s instances to
    the patient row's values; returns how many instances changed.

    An attribute the row has no value for is left as the object had it (the EHR not
    knowing a birth date does not erase the modality's).
    """
    wanted = {tag: element for tag, element in _elements(patient).items()
              if "Value" in element}
    changed = 0
    instances = (Instance.all_objects.filter(series__study__patient=patient)
                 .only("pk", "metadata").order_by("pk"))
    batch: list[Instance] = []
    for instance in instances.iterator(chunk_size=BATCH):
        meta = instance.metadata
        if all(meta.get(tag) == element for tag, element in wanted.items()):
            continue
        instance.metadata = {**meta, **wanted}
        batch.append(instance)
        if len(batch) >= BATCH:
            Instance.all_objects.bulk_update(batch, ["metadata"])
            changed += len(batch)
            batch = []
    if batch:
        Instance.all_objects.bulk_update(batch, ["metadata"])
        changed += len(batch)
    return changed


def update_demographics(patient: Patient, *, name: str, birth_date: Any, sex: str,
                        only_missing: bool = False) -> list[str]:
    """Set the values given (empty ones are left alone); ``only_missing``: fill only what
    the record lacks (an order's PID, which is not an update). Returns the fields changed."""
    changed = []
    for field, value in (("name", name), ("birth_date", birth_date), ("sex", sex)):
        current = getattr(patient, field)
        if value and value != current and not (only_missing and current):
            setattr(patient, field, value)
            changed.append(field)
    if changed:
        patient.save()
        follow_index(patient)
    return changed


def merge(prior: Patient, survivor: Patient, actor: Actor, *,
          detail: dict[str, Any]) -> list[str]:
    """Move everything of ``prior`` under ``survivor``: studies, orders, doctors' grants,
    and the portal account when the survivor has none. Returns the Study Instance UIDs
    moved. Audited (one entry per study moved, one for the prior record), in the
    transaction that moves them.

    The prior record stays, empty, so that what refers to it (consent, access codes,
    conflicts to review) is not lost; it is named in the audit entries.
    """
    with transaction.atomic():
        studies = list(Study.all_objects.select_for_update().filter(patient=prior)
                       .order_by("pk"))
        Study.all_objects.filter(pk__in=[s.pk for s in studies]).update(patient=survivor)
        ScheduledProcedure.objects.filter(patient=prior).update(patient=survivor)
        AccessGrant.objects.filter(patient=prior).update(patient=survivor)
        if prior.user_id is not None and survivor.user_id is None:
            survivor.user_id = prior.user_id
            survivor.save(update_fields=["user"])
        follow_index(survivor)
        moved = [s.study_instance_uid for s in studies]
        common = {**detail, "event": "patient_merge", "prior_patient_id": prior.patient_id,
                  "prior_patient_pk": prior.pk, "surviving_patient_id": survivor.patient_id,
                  "studies_moved": moved}
        for study in studies:
            study.patient = survivor
        targets = [Target.study(s) for s in studies] + [Target.patient(prior)]
        record(AuditAction.STORE, actor, targets, Outcome.ALLOWED,
               reason="patient records merged", detail=common)
    return moved
