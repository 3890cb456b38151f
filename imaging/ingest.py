"""The one ingest path: every way a DICOM object comes in (import command, browser upload,
STOW-RS, C-STORE) stores it by calling :func:`ingest`.

Order of work, so that a failure leaves nothing half-stored: parse and validate, checksum,
write the blob under a fresh opaque key, then index it in one transaction; if the
transaction fails the blob is deleted again. The same SOP Instance UID twice is idempotent:
the same bytes are a duplicate, different bytes a conflict, and the original is kept.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import IO, Any

from django.db import IntegrityError, transaction
from django.db.models import F

from . import blobs
from .dicomfile import InvalidObject, ParsedObject, parse
from .models import Instance, Patient, PatientConflict, Series, Study

log = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    REJECTED = "rejected"


@dataclass(frozen=True)
class IngestResult:
    outcome: Outcome
    reason: str = ""
    sop_instance_uid: str = ""
    study_instance_uid: str = ""
    instance_id: int | None = None

    @property
    def accepted(self) -> bool:
        """Stored now or already held with the same bytes: the sender may forget it."""
        return self.outcome in (Outcome.STORED, Outcome.DUPLICATE)


def ingest(fp: IO[bytes], *, source: str = "") -> IngestResult:
    """Store one DICOM object read from the seekable binary file ``fp`` (from its start).

    ``source`` says where it came from (``import:<path>``, ``upload:<user>``,
    ``cstore:<AE>``) and is kept on the instance.
    """
    fp.seek(0)
    try:
        parsed = parse(fp)
    except InvalidObject as exc:
        return IngestResult(Outcome.REJECTED, str(exc))

    stored = _stored_sha256(parsed.sop_instance_uid)
    if stored is not None:
        return _compare(parsed, stored, blobs.sha256(fp)[0])

    key = blobs.new_key()
    digest, size = blobs.write(fp, key)  # hashed while it streams to the storage
    try:
        with transaction.atomic():
            instance = _index(parsed, key=key, sha256=digest, size=size, source=source)
    except InvalidObject as exc:
        blobs.delete(key)
        return IngestResult(Outcome.REJECTED, str(exc), parsed.sop_instance_uid)
    except IntegrityError:
        blobs.delete(key)
        # Another ingest stored the same SOP Instance UID between our check and our insert.
        stored = _stored_sha256(parsed.sop_instance_uid)
        if stored is not None:
            return _compare(parsed, stored, digest)
        raise
    except BaseException:
        blobs.delete(key)
        raise
    return IngestResult(
        Outcome.STORED,
        sop_instance_uid=parsed.sop_instance_uid,
        study_instance_uid=parsed.study_instance_uid,
        instance_id=instance.pk,
    )


def _stored_sha256(sop_instance_uid: str) -> tuple[int, str] | None:
    row = (
        Instance.objects.filter(sop_instance_uid=sop_instance_uid)
        .values_list("pk", "sha256")
        .first()
    )
    return (row[0], row[1]) if row is not None else None


def _compare(parsed: ParsedObject, stored: tuple[int, str], digest: str) -> IngestResult:
    pk, stored_digest = stored
    if stored_digest == digest:
        return IngestResult(
            Outcome.DUPLICATE,
            "already stored with the same content",
            parsed.sop_instance_uid,
            parsed.study_instance_uid,
            pk,
        )
    return IngestResult(
        Outcome.CONFLICT,
        "an instance with this SOP Instance UID is already stored with different content; "
        "the stored original is kept",
        parsed.sop_instance_uid,
        parsed.study_instance_uid,
        pk,
    )


def _index(parsed: ParsedObject, *, key: str, sha256: str, size: int, source: str) -> Instance:
    """Create or update the index rows for one object. Runs inside a transaction."""
    # The common case, a further object of a known series, costs one query here.
    series = (
        Series.objects.select_related("study__patient")
        .filter(series_instance_uid=parsed.series_instance_uid)
        .first()
    )
    series_created = False
    if series is not None:
        study = series.study
    else:
        study_or_none = (
            Study.objects.select_related("patient")
            .filter(study_instance_uid=parsed.study_instance_uid)
            .first()
        )
        study = study_or_none if study_or_none is not None else _new_study(parsed)
        series, series_created = Series.objects.get_or_create(
            series_instance_uid=parsed.series_instance_uid,
            defaults={"study": study, **parsed.series},
        )
    patient = study.patient
    if study.study_instance_uid != parsed.study_instance_uid or series.study_id != study.pk:
        raise InvalidObject(
            f"SeriesInstanceUID {parsed.series_instance_uid} already belongs to another study"
        )

    instance = Instance.objects.create(
        sop_instance_uid=parsed.sop_instance_uid,
        series=series,
        sop_class_uid=parsed.sop_class_uid,
        transfer_syntax_uid=parsed.transfer_syntax_uid,
        has_file_meta=parsed.has_file_meta,
        blob_key=key,
        sha256=sha256,
        size_bytes=size,
        metadata=parsed.metadata,
        source=source[:128],
        **parsed.instance,
    )
    Series.objects.filter(pk=series.pk).update(
        num_instances=F("num_instances") + 1, size_bytes=F("size_bytes") + size
    )
    if series_created:
        # Lock the study so concurrent new series each see the others' modality.
        locked = Study.objects.select_for_update().get(pk=study.pk)
        modalities = sorted(
            {m for m in Series.objects.filter(study=locked).values_list("modality", flat=True) if m}
        )
        Study.objects.filter(pk=study.pk).update(
            num_series=F("num_series") + 1,
            num_instances=F("num_instances") + 1,
            size_bytes=F("size_bytes") + size,
            modalities="\\".join(modalities)[:64],
        )
    else:
        Study.objects.filter(pk=study.pk).update(
            num_instances=F("num_instances") + 1, size_bytes=F("size_bytes") + size
        )

    differences = demographic_differences(patient, parsed.patient)
    if differences:
        PatientConflict.objects.create(
            patient=patient, instance=instance, differences=differences
        )
        log.warning(
            "patient demographics differ for %s: %s", instance.sop_instance_uid, differences
        )
    return instance


def _new_study(parsed: ParsedObject) -> Study:
    # The patient is created in the same savepoint as the study, so losing the race to
    # another ingest of the same study leaves no stray patient behind.
    try:
        with transaction.atomic():
            return Study.objects.create(
                study_instance_uid=parsed.study_instance_uid,
                patient=_patient(parsed.patient),
                **parsed.study,
            )
    except IntegrityError:
        return Study.objects.select_related("patient").get(
            study_instance_uid=parsed.study_instance_uid
        )


def _patient(fields: dict[str, Any]) -> Patient:
    if not fields["patient_id"]:
        # No PatientID: the object gets a patient of its own, never a shared "unknown".
        return Patient.objects.create(**fields)
    patient, _ = Patient.objects.get_or_create(
        patient_id=fields["patient_id"],
        issuer=fields["issuer"],
        defaults={k: v for k, v in fields.items() if k not in ("patient_id", "issuer")},
    )
    return patient


def _norm_name(name: str) -> str:
    return " ".join(name.replace("^", " ").split()).casefold()


def demographic_differences(patient: Patient, received: dict[str, Any]) -> dict[str, Any]:
    """Fields where the received object disagrees with the stored patient.

    A value missing on either side is not a disagreement; names compare without case and
    without empty DICOM name components.
    """
    diffs: dict[str, Any] = {}
    if received["patient_id"] and received["patient_id"] != patient.patient_id:
        diffs["PatientID"] = {"stored": patient.patient_id, "received": received["patient_id"]}
    if (
        received["name"]
        and patient.name
        and _norm_name(received["name"]) != _norm_name(patient.name)
    ):
        diffs["PatientName"] = {"stored": patient.name, "received": received["name"]}
    born = received["birth_date"]
    if born and patient.birth_date and born != patient.birth_date:
        diffs["PatientBirthDate"] = {
            "stored": patient.birth_date.isoformat(),
            "received": received["birth_date"].isoformat(),
        }
    return diffs
