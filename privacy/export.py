"""A patient's copy of their data (LGPD art. 18, II and V): every exam as the original DICOM
files, plus a report of who accessed them.

:func:`request_export` records the request and hands the work to a Celery task after the
transaction commits; :func:`build` (the task's body) streams every blob into a ZIP on local
disk chunk by chunk, never holding a study in memory, then saves it to the default storage
under an opaque key. The patient fetches it through a link (:func:`issue_link`) whose token
is stored only as its SHA-256, expires with the file, and works only for the signed-in
patient (or an admin).
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import logging
import secrets
import tempfile
import uuid
import zipfile
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.files import File
from django.core.files.storage import Storage, storages
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import F, Q
from django.template.loader import render_to_string
from django.utils import timezone, translation

from audit import read_sessions
from audit.csv_cells import safe_row
from audit.models import AuditAction, AuditEvent, Outcome
from audit.trail import Actor, Target, record
from imaging import blobs, policies
from imaging.models import Instance, Patient
from imaging.principals import as_principal

from .models import DataExport

if TYPE_CHECKING:
    from imaging.principals import Caller

log = logging.getLogger(__name__)

LINK_LIFETIME = datetime.timedelta(days=7)
STORAGE_ALIAS = "default"
# reads, last_read: for an entry that opened a viewing session, how many reads it counted and
# when the last was (audit.read_sessions).
REPORT_FIELDS = ("when", "who", "role", "action", "object", "study", "outcome",
                 "emergency_access", "reads", "last_read")


def storage() -> Storage:
    return storages[STORAGE_ALIAS]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def may_export(by: Caller, patient: Patient) -> bool:
    """The patient themself, or an admin of their clinic acting on their request."""
    return bool(policies.decide(as_principal(by), policies.Action.EXPORT, patient))


def request_export(patient: Patient, by: Caller, *, language: str = "") -> DataExport:
    """Record the request and build the export in the background once this commits."""
    if not may_export(by, patient):
        raise PermissionDenied("only the patient or an admin may export a patient's data")
    user = as_principal(by).user
    from .tasks import build_export

    with transaction.atomic():
        export = DataExport.objects.create(
            patient=patient, requested_by=user,
            language=language or translation.get_language() or settings.LANGUAGE_CODE,
        )
        record(AuditAction.EXPORT, Actor.for_user(user), Target.patient(patient),
               Outcome.ALLOWED, detail={"export": export.pk, "step": "requested"})
        transaction.on_commit(lambda: build_export.delay(export.pk), robust=True)
    return export


def stale_after() -> datetime.timedelta:
    """A run not finished after this long died with its worker, and may be claimed again:
    the broker gives the task of a dead worker to another one after the visibility timeout
    (portal/settings.py), which must exceed the longest export anyway."""
    return datetime.timedelta(seconds=settings.CELERY_VISIBILITY_TIMEOUT)


def stale_in(export_id: int) -> float | None:
    """Seconds until a running export's claim is stale (0 if it is); None if not running."""
    started = DataExport.objects.filter(
        pk=export_id, status=DataExport.Status.RUNNING).values_list("started", flat=True).first()
    if started is None:
        return None
    return max((started + stale_after() - timezone.now()).total_seconds(), 0.0)


def claim(export_id: int) -> bool:
    """Take the export for this run; False when another run has it or it is done."""
    now = timezone.now()
    claimable = Q(status=DataExport.Status.PENDING) | Q(
        status=DataExport.Status.RUNNING, started__lt=now - stale_after()
    )
    return bool(
        DataExport.objects.filter(claimable, pk=export_id)
        .update(status=DataExport.Status.RUNNING, started=now)
    )


def build(export_id: int) -> DataExport | None:
    """Build the ZIP for a claimed export. Running it again for the same export does nothing."""
    if not claim(export_id):
        log.info("data export %s is not pending; nothing to do", export_id)
        return None
    export = DataExport.objects.select_related("patient", "patient__user").get(pk=export_id)
    try:
        key, size, count = _write_zip(export)
    except Exception as exc:
        log.exception("data export %s failed", export_id)
        DataExport.objects.filter(pk=export_id).update(
            status=DataExport.Status.FAILED, finished=timezone.now(), error=repr(exc)[:2000]
        )
        export.refresh_from_db()
        return export
    now = timezone.now()
    DataExport.objects.filter(pk=export_id).update(
        status=DataExport.Status.READY, finished=now, file_key=key, size_bytes=size,
        num_instances=count, expires=now + LINK_LIFETIME, error="",
    )
    export.refresh_from_db()
    _notify_ready(export)
    return export


@dataclass(frozen=True)
class _Member:
    instance: Instance
    arcname: str


def _members(patient: Patient) -> list[_Member]:
    instances = (
        Instance.objects.filter(series__study__patient=patient)
        .select_related("series", "series__study")
        .defer("metadata")
        .order_by("series__study__study_date", "series__study__pk", "series__series_number",
                  "series__pk", "instance_number", "pk")
    )
    members = []
    for instance in instances.iterator(chunk_size=500):
        study = instance.series.study
        day = study.study_date.isoformat() if study.study_date else "undated"
        arcname = (f"DICOM/{day}_{study.study_instance_uid}/{instance.series.series_instance_uid}"
                   f"/{instance.sop_instance_uid}.dcm")
        members.append(_Member(instance, arcname))
    return members


def _write_zip(export: DataExport) -> tuple[str, int, int]:
    """Write the ZIP to a temporary file, then save it; returns (key, size, instances)."""
    patient = export.patient
    members = _members(patient)
    with tempfile.TemporaryFile(suffix=".zip", dir=settings.FILE_UPLOAD_TEMP_DIR) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for member in members:
                _copy_blob(zf, member)
            with zf.open("access_report.csv", "w") as raw:
                _write_access_report(raw, patient)
            zf.writestr("README.txt", _readme(export, members))
        size = tmp.tell()
        tmp.seek(0)
        key = storage().save(f"exports/{uuid.uuid4().hex}.zip", File(tmp))
    return key, size, len(members)


def _copy_blob(zf: zipfile.ZipFile, member: _Member) -> None:
    """Stream one stored object into the archive, checking it against its ingest checksum."""
    digest = hashlib.sha256()
    with zf.open(member.arcname, "w", force_zip64=True) as dest:
        for chunk in blobs.iter_chunks(member.instance.blob_key):
            digest.update(chunk)
            dest.write(chunk)
    if digest.hexdigest() != member.instance.sha256:
        raise ValueError(f"stored object {member.instance.sop_instance_uid} does not match "
                         "its checksum; run the fixity check")


def access_events(patient: Patient) -> Any:
    return AuditEvent.objects.filter(patient_pk=patient.pk).order_by("seq")


def _write_access_report(raw: IO[bytes], patient: Patient) -> None:
    text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
    writer = csv.writer(text)
    writer.writerow(REPORT_FIELDS)
    sessions = read_sessions.of_patient(patient.pk)
    for event in access_events(patient).iterator(chunk_size=2000):
        obj = f"{event.level} {event.object_uid}".strip()
        session = sessions.get(event.seq)
        writer.writerow(safe_row([
            event.at.isoformat(), event.username or event.peer_ae, event.role, event.action,
            obj, event.study_uid, event.outcome, "yes" if event.break_glass else "",
            session.reads if session else "", session.last_read.isoformat() if session else "",
        ]))
    text.flush()
    text.detach()


def _readme(export: DataExport, members: list[_Member]) -> str:
    with translation.override(export.language or settings.LANGUAGE_CODE):
        return render_to_string("privacy/export_readme.txt", {
            "export": export,
            "patient": export.patient,
            "generated": timezone.now(),
            "members": members,
        })


def _notify_ready(export: DataExport) -> None:
    """Tell the patient the export is ready; the mail carries no link, only where to look."""
    user = export.patient.user
    if user is None or not user.email:
        return
    with translation.override(export.language or settings.LANGUAGE_CODE):
        body = render_to_string("privacy/export_ready_email.txt", {"export": export})
        subject = translation.gettext("Your data export is ready")
    try:
        send_mail(subject, body, None, [user.email])
    except Exception:  # the export is ready either way; the portal page shows it
        log.exception("could not send the export-ready mail for export %s", export.pk)


def issue_link(export: DataExport, user: Caller) -> str:
    """A fresh download token for a ready export; the previous link stops working.

    Only the token's hash is stored, so the link is shown once, right now.
    """
    if not may_export(user, export.patient):
        raise PermissionDenied("not this patient's export")
    if not export.downloadable:
        raise ValueError("the export is not ready or has expired")
    token = secrets.token_urlsafe(32)
    DataExport.objects.filter(pk=export.pk).update(token_hash=token_hash(token))
    export.token_hash = token_hash(token)
    return token


class LinkUnknown(Exception):
    """No export has this token (never issued, or replaced by a newer link)."""


class LinkExpired(Exception):
    """The export behind this token has expired and its file is gone or going."""


class NotYours(Exception):
    """The signed-in user is neither the patient nor an admin."""


def open_download(token: str, user: Caller, actor: Actor) -> tuple[DataExport, IO[bytes]]:
    """Check the token and the user, count and audit the download, open the file."""
    export = (DataExport.objects.select_related("patient")
              .filter(token_hash=token_hash(token)).first())
    if export is None:
        raise LinkUnknown
    patient = export.patient
    if not may_export(user, patient):
        record(AuditAction.EXPORT, actor, Target.patient(patient), Outcome.DENIED,
               reason="not the patient's own export",
               detail={"export": export.pk, "step": "download"})
        raise NotYours
    if not export.downloadable:
        record(AuditAction.EXPORT, actor, Target.patient(patient), Outcome.FAILED,
               reason="link expired", detail={"export": export.pk, "step": "download"})
        raise LinkExpired
    fp = storage().open(export.file_key, "rb")
    DataExport.objects.filter(pk=export.pk).update(downloads=F("downloads") + 1)
    record(AuditAction.EXPORT, actor, Target.patient(patient), Outcome.ALLOWED,
           detail={"export": export.pk, "step": "download"})
    return export, fp


def delete_expired(now: datetime.datetime | None = None) -> int:
    """Delete the files of expired exports; the rows stay as a record of what was given."""
    now = now or timezone.now()
    count = 0
    for export in DataExport.objects.filter(status=DataExport.Status.READY, expires__lte=now):
        if export.file_key:
            storage().delete(export.file_key)
        DataExport.objects.filter(pk=export.pk).update(
            status=DataExport.Status.EXPIRED, file_key="", token_hash=None
        )
        count += 1
    return count
