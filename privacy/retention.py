"""Retention: when a patient's records may go, legal holds that keep them, and the purge.

Medical records are kept for a period after the patient's last exam (Lei 13.787/2018 and
CFM rules: 20 years by default, set per clinic), and a minor's at least until they reach a
set age. Past that, LGPD asks us not to keep them without reason. Nothing is deleted by
itself: :func:`list_due` only lists patients whose retention ended, an admin approves each
(:func:`approve`), and :func:`purge` removes files and rows together, leaving a
:class:`~privacy.models.Tombstone` and an audit entry.

The purge deletes the rows, the tombstone, the audit entry and the list of files to delete
in one transaction; the files are deleted after it commits (a row never points at a deleted
file), and any file that cannot be deleted stays listed for a retry.

Rejected instances (IHE IOCM, :mod:`imaging.rejection`) have no retention of their own:
they are kept, unserved, until their patient's records may go, and the purge takes them
with the rest (``all_objects``, never only what is served).
"""

from __future__ import annotations

import datetime
import logging
from typing import TYPE_CHECKING, Any

from auditlog.context import disable_auditlog
from auditlog.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.core.files.storage import storages
from django.db import IntegrityError, router, transaction
from django.db.models import Exists, Max, OuterRef, Q, QuerySet
from django.db.models.deletion import Collector
from django.utils import timezone

from accounts.models import Clinic
from audit.models import AuditAction, Outcome
from audit.trail import Actor, Target, record
from imaging import policies
from imaging.models import Instance, Patient, Series, Study
from imaging.principals import as_principal

from . import export
from .models import DataExport, LegalHold, PendingBlobDeletion, PurgeRequest, Tombstone

if TYPE_CHECKING:
    from accounts.models import User

log = logging.getLogger(__name__)

ADULT_AGE = 18
DEFAULT_RETENTION_YEARS: int = Clinic._meta.get_field("retention_years").default
DEFAULT_MINOR_AGE: int = Clinic._meta.get_field("minor_retention_age").default
DICOM_STORAGE = "dicom"
# Not a Django storage: the replica bucket, through replica.store (its objects are
# encrypted, but a purge erases every copy, not only the readable one).
REPLICA_STORAGE = "replica"


class PurgeRefused(Exception):
    """The purge may not go ahead (not approved, held, or no longer due); nothing changed."""


def add_years(day: datetime.date, years: int) -> datetime.date:
    """``day`` moved by whole years; 29 February becomes 28 February in other years."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


def last_exam(patient: Patient) -> datetime.date:
    """The date of the patient's last exam.

    Studies without a date count from when they were stored; a patient with no studies at
    all counts from when the record was created.
    """
    days = []
    for study_date, created in Study.all_objects.filter(patient=patient).values_list(
            "study_date", "created"):
        days.append(study_date or timezone.localdate(created))
    return max(days) if days else timezone.localdate(patient.created)


def retention_end(patient: Patient) -> datetime.date:
    """The day the patient's records may be purged: the later of (last exam + the clinic's
    retention years) and, for someone who was a minor at the last exam, the day they reach
    the clinic's minor retention age."""
    clinic = patient.clinic
    years = clinic.retention_years if clinic else DEFAULT_RETENTION_YEARS
    minor_age = clinic.minor_retention_age if clinic else DEFAULT_MINOR_AGE
    last = last_exam(patient)
    end = add_years(last, years)
    birth = patient.birth_date
    if birth is not None and add_years(birth, ADULT_AGE) > last:
        end = max(end, add_years(birth, minor_age))
    return end


def active_holds(patient: Patient) -> QuerySet[LegalHold]:
    """Unlifted holds on the patient or on any of their studies."""
    return LegalHold.objects.filter(lifted__isnull=True).filter(
        Q(patient=patient) | Q(study__patient=patient)
    )


def is_held(patient: Patient) -> bool:
    return active_holds(patient).exists()


# --- Listing --------------------------------------------------------------------------------

def list_due(today: datetime.date | None = None) -> list[PurgeRequest]:
    """List every patient past retention, not held and not listed yet; returns the new rows.

    Safe to run any number of times: a patient has at most one open request. A cancelled
    request does not stop the patient being listed again; a legal hold does.
    """
    today = today or timezone.localdate()
    shortest = min([DEFAULT_RETENTION_YEARS,
                    *Clinic.objects.values_list("retention_years", flat=True)])
    held = LegalHold.objects.filter(lifted__isnull=True).filter(
        Q(patient=OuterRef("pk")) | Q(study__patient=OuterRef("pk"))
    )
    listed = PurgeRequest.objects.filter(patient_pk=OuterRef("pk"),
                                         status__in=PurgeRequest.OPEN)
    candidates = (
        Patient.objects.annotate(last=Max("studies__study_date"), held=Exists(held),
                                 listed=Exists(listed))
        .filter(held=False, listed=False)
        # Nobody whose newest dated exam is within the shortest retention can be due.
        .filter(Q(last__isnull=True) | Q(last__lte=add_years(today, -shortest)))
        .select_related("clinic")
        .order_by("pk")
    )
    created = []
    for patient in candidates.iterator(chunk_size=500):
        end = retention_end(patient)
        if end > today:
            continue
        try:
            with transaction.atomic():
                created.append(PurgeRequest.objects.create(
                    patient=patient, patient_pk=patient.pk, patient_ref=_ref(patient),
                    last_exam=last_exam(patient), retention_end=end,
                ))
        except IntegrityError:  # another run listed the patient a moment ago
            continue
    if created:
        log.info("%d patient(s) listed as past retention", len(created))
    return created


def _ref(patient: Patient) -> str:
    return f"{patient.patient_id}^{patient.issuer}" if patient.issuer else patient.patient_id


# --- Holds ----------------------------------------------------------------------------------

def place_hold(*, reason: str, by: Any, patient: Patient | None = None,
               study: Study | None = None) -> LegalHold:
    """Hold a patient's or a study's records; takes the same lock as :func:`purge`."""
    if (patient is None) == (study is None):
        raise ValueError("a legal hold is on a patient or on a study")
    if not reason.strip():
        raise ValueError("a legal hold needs a reason")
    owner_pk = patient.pk if patient is not None else study.patient_id  # type: ignore[union-attr]
    with transaction.atomic():
        if Patient.objects.select_for_update().filter(pk=owner_pk).first() is None:
            raise ValueError("the patient no longer exists (purged meanwhile?)")
        return LegalHold.objects.create(patient=patient, study=study, reason=reason,
                                        placed_by=by)


def lift_hold(hold: LegalHold, by: Any) -> LegalHold:
    if hold.lifted is None:
        hold.lifted = timezone.now()
        hold.lifted_by = by
        hold.save(update_fields=["lifted", "lifted_by"])
    return hold


# --- Approval and purge ---------------------------------------------------------------------

def _require_admin(user: Any, patient_pk: int | None = None) -> None:
    """Only admins purge, and only their clinics' patients (the policy's ``DELETE``)."""
    principal = as_principal(user)
    patient = Patient.objects.filter(pk=patient_pk).first() if patient_pk else None
    if patient is None:
        allowed = policies.decide(principal, policies.Action.DELETE)
    else:
        allowed = policies.decide(principal, policies.Action.DELETE, patient)
    if not allowed:
        raise PermissionDenied("only admins approve and carry out purges")


def approve(request_id: int, approved_by: User, reason: str) -> PurgeRequest:
    """An admin's decision that a listed patient may be purged, and why."""
    _require_admin(approved_by)
    if not reason.strip():
        raise ValueError("approving a purge needs a reason")
    with transaction.atomic():
        request = PurgeRequest.objects.select_for_update().get(pk=request_id)
        _require_admin(approved_by, request.patient_pk)
        if request.status == PurgeRequest.Status.APPROVED:
            return request
        if request.status != PurgeRequest.Status.LISTED:
            raise PurgeRefused(f"purge request {request_id} is {request.status}")
        request.status = PurgeRequest.Status.APPROVED
        request.approved_by = approved_by
        request.approved_at = timezone.now()
        request.reason = reason
        request.save(update_fields=["status", "approved_by", "approved_at", "reason"])
    return request


def cancel(request_id: int, by: Any, note: str = "") -> PurgeRequest:
    with transaction.atomic():
        request = PurgeRequest.objects.select_for_update().get(pk=request_id)
        if request.status in PurgeRequest.OPEN:
            request.status = PurgeRequest.Status.CANCELLED
            request.note = note or f"cancelled by {by.get_username()}"
            request.save(update_fields=["status", "note"])
    return request


def _refusal(request: PurgeRequest, patient: Patient | None,
             today: datetime.date) -> str | None:
    if patient is None:
        return "the patient no longer exists"
    if is_held(patient):
        return "a legal hold was placed on the patient or one of their studies"
    if retention_end(patient) > today:
        return "the patient has exams that are not past retention"
    return None


def purge(request_id: int, approved_by: User, reason: str,
          today: datetime.date | None = None) -> Tombstone:
    """Remove an approved patient's rows and files, leaving a tombstone and an audit entry.

    Refused (:class:`PurgeRefused`, request cancelled, nothing deleted) when the request is
    not approved, a hold appeared after listing, or a newer exam put the patient back within
    retention. Purging a request twice returns the first tombstone.
    """
    _require_admin(approved_by)
    if not reason.strip():
        raise ValueError("a purge needs a reason")
    today = today or timezone.localdate()
    refused: str | None = None
    with transaction.atomic():
        request = PurgeRequest.objects.select_for_update().get(pk=request_id)
        _require_admin(approved_by, request.patient_pk)
        if request.status == PurgeRequest.Status.PURGED:
            return Tombstone.objects.get(request=request)
        if request.status != PurgeRequest.Status.APPROVED:
            raise PurgeRefused(f"purge request {request_id} is {request.status}, not approved")
        patient = (Patient.objects.select_for_update(of=("self",)).select_related("clinic")
                   .filter(pk=request.patient_pk).first())
        refused = _refusal(request, patient, today)
        if refused is not None or patient is None:
            request.status = PurgeRequest.Status.CANCELLED
            request.note = f"purge refused: {refused}"
            request.save(update_fields=["status", "note"])
        else:
            tombstone = _purge_patient(patient, request, approved_by, reason)
            request.status = PurgeRequest.Status.PURGED
            request.save(update_fields=["status"])
            tombstone_pk = tombstone.pk
            transaction.on_commit(lambda: _dispatch_blob_deletion(tombstone_pk), robust=True)
    if refused is not None:
        raise PurgeRefused(refused)
    return tombstone


def _initials(name: str) -> str:
    parts = [p for p in name.replace("^", " ").split() if p]
    return "".join(p[0].upper() for p in parts)[:16]


def _purge_patient(patient: Patient, request: PurgeRequest, approved_by: User,
                   reason: str) -> Tombstone:
    # Rejected objects (imaging.rejection) go with the rest: all_objects, not what is served.
    studies = list(Study.all_objects.filter(patient=patient).order_by("study_date", "pk"))
    instances = Instance.all_objects.filter(series__study__patient=patient)
    blob_keys = list(instances.values_list("blob_key", flat=True))
    export_keys = list(DataExport.objects.filter(patient=patient).exclude(file_key="")
                       .values_list("file_key", flat=True))
    replica_keys = _replica_keys(instances)
    summary = [
        {"uid": s.study_instance_uid, "date": s.study_date.isoformat() if s.study_date else "",
         "accession": s.accession_number, "modalities": s.modalities,
         "instances": s.num_instances, "bytes": s.size_bytes}
        for s in studies
    ]
    tombstone = Tombstone.objects.create(
        request=request, patient_pk=patient.pk, patient_id=patient.patient_id,
        issuer=patient.issuer, initials=_initials(patient.name),
        clinic=patient.clinic.name if patient.clinic else "", studies=summary,
        num_instances=len(blob_keys), size_bytes=sum(s.size_bytes for s in studies),
        last_exam=request.last_exam, retention_end=request.retention_end,
        approved_by=request.approved_by,
        approved_by_name=request.approved_by.get_username() if request.approved_by else "",
        approved_at=request.approved_at, purged_by_name=approved_by.get_username(),
        reason=reason,
    )
    PendingBlobDeletion.objects.bulk_create(
        [PendingBlobDeletion(tombstone=tombstone, storage=DICOM_STORAGE, key=key)
         for key in blob_keys]
        + [PendingBlobDeletion(tombstone=tombstone, storage=export.STORAGE_ALIAS, key=key)
           for key in export_keys]
        + [PendingBlobDeletion(tombstone=tombstone, storage=REPLICA_STORAGE, key=key)
           for key in replica_keys]
    )
    targets = [Target.patient(patient), *(Target.study(s) for s in studies)]
    with disable_auditlog():
        # Lifted holds go with the patient; active ones were refused above.
        LegalHold.objects.filter(Q(patient=patient) | Q(study__patient=patient)).delete()
        instances.delete()
        Series.all_objects.filter(study__patient=patient).delete()
        Study.all_objects.filter(patient=patient).delete()
        _forget_model_changes(patient)
        patient.delete()
    record(AuditAction.DELETE, Actor.for_user(approved_by), targets, Outcome.ALLOWED,
           reason=reason,
           detail={"tombstone": tombstone.pk, "purge_request": request.pk,
                   "instances": len(blob_keys), "bytes": tombstone.size_bytes,
                   "approved_by": tombstone.approved_by_name})
    return tombstone


def _replica_keys(instances: QuerySet[Instance]) -> list[str]:
    """The replica objects of these instances, written or verified. An upload still in
    flight finds its copy row gone and deletes its own object (replica.replicate.upload)."""
    from replica.models import Copy

    return list(Copy.objects.filter(instance__in=instances, tier=Copy.Tier.REPLICA)
                .exclude(key="").values_list("key", flat=True))


def _delete_blob(storage: str, key: str) -> None:
    if storage == REPLICA_STORAGE:
        from replica import store

        store.delete(key)
    else:
        storages[storage].delete(key)


def _forget_model_changes(patient: Patient) -> None:
    """Delete django-auditlog's before/after copies of the patient and everything deleted
    with them (consents, grants, conflicts): they hold the name and birth date we are
    erasing. The access trail and the tombstone remain as the record of the purge."""
    collector = Collector(using=router.db_for_write(Patient))
    collector.collect([patient])
    for model, objs in collector.data.items():
        pks = [str(obj.pk) for obj in objs]
        if pks:
            LogEntry.objects.filter(
                content_type=ContentType.objects.get_for_model(model), object_pk__in=pks
            ).delete()


def _dispatch_blob_deletion(tombstone_pk: int) -> None:
    from .tasks import delete_pending_blobs

    delete_pending_blobs.delay(tombstone_pk)


def delete_pending_blobs(tombstone_id: int | None = None) -> tuple[int, int]:
    """Delete files whose rows were purged; returns (deleted, still pending).

    A file that cannot be deleted now stays listed with the error, for the next run.
    """
    pending = PendingBlobDeletion.objects.order_by("pk")
    if tombstone_id is not None:
        pending = pending.filter(tombstone_id=tombstone_id)
    deleted = failed = 0
    for row in pending.iterator(chunk_size=1000):
        try:
            _delete_blob(row.storage, row.key)
        except Exception as exc:
            failed += 1
            log.warning("could not delete %s:%s (attempt %d): %r", row.storage, row.key,
                        row.attempts + 1, exc)
            PendingBlobDeletion.objects.filter(pk=row.pk).update(
                attempts=row.attempts + 1, last_error=repr(exc)[:2000]
            )
        else:
            row.delete()
            deleted += 1
    done = Tombstone.objects.filter(blobs_deleted__isnull=True).exclude(
        Exists(PendingBlobDeletion.objects.filter(tombstone=OuterRef("pk")))
    )
    if tombstone_id is not None:
        done = done.filter(pk=tombstone_id)
    done.update(blobs_deleted=timezone.now())
    return deleted, failed
