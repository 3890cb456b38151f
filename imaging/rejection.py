"""Deleting wrong images the standard way: IHE Imaging Object Change Management (IOCM).

A rejection note is a Key Object Selection document whose title is one of DICOM CID 7011
(:data:`REJECTION_NOTES`). Received like any object (C-STORE, STOW-RS, the study page's
own note, all through :func:`imaging.ingest.ingest`), it is stored as is and then
:func:`apply`-ed in the same transaction: the instances it references in its Current
Requested Procedure Evidence Sequence, within its own study (so its own patient), are
marked rejected; references to anything else are listed as not found, never rejected.
The note itself is hidden too, as IHE asks of rejection notes.

Rejected instances stay stored (their originals untouched) but are not served: the
default managers of :mod:`imaging.models` leave them out of every read path, and the
series' and study's counters count what is served (:func:`recount`). An admin can undo a
rejection (:func:`undo`); a purge takes rejected instances with the patient's other
records, under the same retention rules (:mod:`privacy.retention`).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass
from io import BytesIO
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from audit.models import AuditAction, Outcome
from audit.trail import Actor, Target, record

from . import policies
from .models import BODY_PARTS_LENGTH, Instance, Rejection, Series, Study
from .search_text import code_list

if TYPE_CHECKING:
    from django.utils.functional import _StrPromise

    from .dicomfile import ParsedObject
    from .principals import Principal
    from .store_audit import StoreAudit

KOS_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"
SCHEME = "DCM"
#: DICOM CID 7011, Rejected for Quality Reasons and its siblings: code -> meaning.
REJECTION_NOTES: dict[str, str] = {
    "113001": "Rejected for Quality Reasons",
    "113037": "Rejected for Patient Safety Reasons",
    "113038": "Incorrect Modality Worklist Entry",
    "113039": "Data Retention Policy Expired",
}
#: The same reasons, for the study page's form.
REASON_CHOICES: list[tuple[str, _StrPromise]] = [
    ("113001", _("Rejected for quality reasons")),
    ("113037", _("Rejected for patient safety reasons")),
    ("113038", _("Incorrect modality worklist entry")),
    ("113039", _("Data retention policy expired")),
]

# DICOM JSON tags of what a note says (PS3.3 C.17.6, TID 2010).
CONCEPT_NAME = "0040A043"
CODE_VALUE, CODING_SCHEME, CODE_MEANING = "00080100", "00080102", "00080104"
EVIDENCE = "0040A375"
STUDY_UID, SERIES_UID = "0020000D", "0020000E"
REFERENCED_SERIES = "00081115"
REFERENCED_SOP = "00081199"
REFERENCED_SOP_INSTANCE = "00081155"


@dataclass(frozen=True)
class Note:
    """What a rejection note asks: why, and the (study, series, SOP instance) UIDs."""

    code_value: str
    code_meaning: str
    references: tuple[tuple[str, str, str], ...]


def _first(element: dict[str, Any] | None) -> Any:
    values = (element or {}).get("Value") or []
    return values[0] if values else None


def _items(dataset: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    return list((dataset.get(tag) or {}).get("Value") or [])


def note_of(sop_class_uid: str, metadata: dict[str, Any]) -> Note | None:
    """The rejection note in an object's DICOM JSON metadata, or None if it is not one."""
    if sop_class_uid != KOS_SOP_CLASS:
        return None
    concept = next(iter(_items(metadata, CONCEPT_NAME)), {})
    code = str(_first(concept.get(CODE_VALUE)) or "")
    if str(_first(concept.get(CODING_SCHEME)) or "") != SCHEME or code not in REJECTION_NOTES:
        return None
    references = []
    for study in _items(metadata, EVIDENCE):
        study_uid = str(_first(study.get(STUDY_UID)) or "")
        for series in _items(study, REFERENCED_SERIES):
            series_uid = str(_first(series.get(SERIES_UID)) or "")
            for sop in _items(series, REFERENCED_SOP):
                uid = str(_first(sop.get(REFERENCED_SOP_INSTANCE)) or "")
                if uid:
                    references.append((study_uid, series_uid, uid))
    meaning = str(_first(concept.get(CODE_MEANING)) or REJECTION_NOTES[code])
    return Note(code, meaning[:128], tuple(references))


def _may_reject(audit: StoreAudit | None, study: Study) -> policies.Decision:
    """The sender may reject what it may store for the patient: the policy decides, as for
    any store. Without a principal only the system itself (the import command) may."""
    principal: Principal | None = audit.principal if audit is not None else None
    if principal is None:
        system = audit is None or audit.actor.role == "system"
        return policies.Decision(system, why="" if system else "no principal to decide for")
    return policies.decide(principal, policies.Action.STORE, study.patient)


def apply(parsed: ParsedObject, kos_pk: int, audit: StoreAudit | None) -> Rejection | None:
    """Apply the rejection note just indexed as ``kos_pk`` (inside ingest's transaction).

    Returns the rejection, or None if the object is no rejection note or its sender may not
    reject here (the note is then kept as an ordinary object, and the refusal audited).
    """
    note = note_of(parsed.sop_class_uid, parsed.metadata)
    if note is None:
        return None
    kos = Instance.all_objects.select_related("series__study__patient").get(pk=kos_pk)
    study = kos.series.study
    actor = audit.actor if audit is not None else Actor.system("ingest")
    decision = _may_reject(audit, study)
    if not decision:
        record(AuditAction.REJECT, actor, Target.study(study), Outcome.DENIED,
               reason=decision.why, detail={"kos": kos.sop_instance_uid,
                                            "code": note.code_value})
        return None
    wanted = {sop for _study, _series, sop in note.references} - {kos.sop_instance_uid}
    # Only this study's (so this patient's) instances, not yet rejected, in the series named.
    series_of = {sop: series for _study, series, sop in note.references}
    matching = [
        (pk, sop, series) for pk, sop, series in Instance.all_objects.filter(
            series__study=study, sop_instance_uid__in=sorted(wanted), rejection__isnull=True,
        ).values_list("pk", "sop_instance_uid", "series__series_instance_uid")
        if not series_of.get(sop) or series_of[sop] == series
    ]
    sender_patient = str(parsed.patient.get("patient_id") or "")
    if sender_patient and sender_patient != study.patient.patient_id:
        matching = []  # a note naming another patient than its study's rejects nothing
    rejected = sorted(sop for _pk, sop, _series in matching)
    not_found = sorted(wanted - set(rejected))
    rejection = Rejection.objects.create(
        study=study, kos_sop_instance_uid=kos.sop_instance_uid, code_value=note.code_value,
        code_meaning=note.code_meaning, actor_user_id=actor.user_id,
        actor=(actor.username or actor.peer_ae)[:128], via=audit.via[:32] if audit else "",
        rejected_count=len(rejected), not_found=not_found,
    )
    Instance.all_objects.filter(pk__in=[kos.pk, *(pk for pk, _s, _r in matching)]).update(
        rejection=rejection)
    recount(study.pk)
    record(AuditAction.REJECT, actor, Target.study(study), Outcome.ALLOWED,
           reason=note.code_meaning,
           detail={"kos": kos.sop_instance_uid, "code": note.code_value,
                   "scheme": SCHEME, "rejected": rejected, "not_found": not_found,
                   "via": audit.via if audit else ""})
    return rejection


def undo(rejection_pk: int, user: Any, *, actor: Actor | None = None) -> int:
    """Serve again what a rejection hid (its note stays hidden); returns how many
    instances came back, 0 if it was undone already. Audited."""
    actor = actor or Actor.for_user(user)
    with transaction.atomic():
        rejection = Rejection.objects.select_for_update().select_related(
            "study__patient").get(pk=rejection_pk)
        if rejection.undone is not None:
            return 0
        back = list(Instance.all_objects.filter(rejection=rejection).exclude(
            sop_instance_uid=rejection.kos_sop_instance_uid).values_list(
            "sop_instance_uid", flat=True))
        Instance.all_objects.filter(rejection=rejection, sop_instance_uid__in=back).update(
            rejection=None)
        rejection.undone, rejection.undone_by = timezone.now(), user
        rejection.save(update_fields=["undone", "undone_by"])
        recount(rejection.study_id)
        record(AuditAction.UNDO_REJECTION, actor, Target.study(rejection.study),
               Outcome.ALLOWED, reason=rejection.code_meaning,
               detail={"kos": rejection.kos_sop_instance_uid, "restored": sorted(back)})
    return len(back)


def recount(study_pk: int) -> None:
    """The study's and its series' counters as served: rejected instances apart, series
    whose every instance is rejected not counted, modalities and body parts of the rest."""
    locked = Study.all_objects.select_for_update().get(pk=study_pk)
    visible = Q(rejection__isnull=True)
    per_series = Instance.all_objects.filter(series__study=locked).values("series_id").annotate(
        n=Count("pk", filter=visible), size=Sum("size_bytes", filter=visible),
        rejected=Count("pk", filter=~visible)).order_by()
    for row in per_series:
        Series.all_objects.filter(pk=row["series_id"]).update(
            num_instances=row["n"], size_bytes=row["size"] or 0,
            rejected_instances=row["rejected"])
    served = list(Series.objects.filter(study=locked).values_list(
        "modality", "body_part", "num_instances", "size_bytes"))
    Study.all_objects.filter(pk=study_pk).update(
        num_series=len(served), num_instances=sum(s[2] for s in served),
        size_bytes=sum(s[3] for s in served),
        rejected_instances=sum(row["rejected"] for row in per_series),
        modalities="\\".join(sorted({m for m, *_ in served if m}))[:64],
        body_parts=code_list((part for _m, part, *_ in served), BODY_PARTS_LENGTH),
    )


# --- a note made on the portal ----------------------------------------------------------


def _copy(ds: Dataset, metadata: dict[str, Any]) -> None:
    """Patient and study attributes as the study's objects carry them (so ingest finds no
    demographic conflict)."""
    source = Dataset.from_json({k: v for k, v in metadata.items() if k in _TAGS})
    for keyword in _COPIED:
        setattr(ds, keyword, source.get(keyword, ""))


_COPIED = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
           "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber",
           "ReferringPhysicianName", "StudyID")
_TAGS = {"00100010", "00100020", "00100021", "00100030", "00100040", "0020000D",
         "00080020", "00080030", "00080050", "00080090", "00200010"}


def build_note(study: Study, instances: Iterable[Instance], code: str) -> bytes:
    """A Part 10 rejection note (a KOS, TID 2010 with a CID 7011 title) for ``instances``
    of ``study``, as a modality or PACS would send one."""
    if code not in REJECTION_NOTES:
        raise ValueError(f"{code} is not a rejection reason of CID 7011")
    chosen = list(instances)
    if not chosen:
        raise ValueError("a rejection note needs instances to reject")
    first = Instance.all_objects.filter(series__study=study).order_by("pk").first()
    ds = Dataset()
    _copy(ds, first.metadata if first is not None else {})
    ds.StudyInstanceUID = study.study_instance_uid
    now = datetime.datetime.now()
    ds.SOPClassUID = UID(KOS_SOP_CLASS)
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "KO"
    ds.SeriesNumber = 999
    ds.InstanceNumber = 1
    ds.Manufacturer = "portal"
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.ReferencedPerformedProcedureStepSequence = Sequence()
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    title = Dataset()
    title.CodeValue, title.CodingSchemeDesignator = code, SCHEME
    title.CodeMeaning = REJECTION_NOTES[code]
    ds.ConceptNameCodeSequence = Sequence([title])
    template = Dataset()
    template.MappingResource, template.TemplateIdentifier = "DCMR", "2010"
    ds.ContentTemplateSequence = Sequence([template])
    by_series: dict[str, list[Instance]] = {}
    content = []
    for instance in chosen:
        by_series.setdefault(instance.series.series_instance_uid, []).append(instance)
        ref = Dataset()
        ref.ReferencedSOPClassUID = instance.sop_class_uid
        ref.ReferencedSOPInstanceUID = instance.sop_instance_uid
        item = Dataset()
        item.RelationshipType = "CONTAINS"
        item.ValueType = "IMAGE" if instance.rows else "COMPOSITE"
        item.ReferencedSOPSequence = Sequence([ref])
        content.append(item)
    ds.ContentSequence = Sequence(content)
    series_items = []
    for series_uid, members in by_series.items():
        item = Dataset()
        item.SeriesInstanceUID = series_uid
        refs = []
        for instance in members:
            ref = Dataset()
            ref.ReferencedSOPClassUID = instance.sop_class_uid
            ref.ReferencedSOPInstanceUID = instance.sop_instance_uid
            refs.append(ref)
        item.ReferencedSOPSequence = Sequence(refs)
        series_items.append(item)
    evidence = Dataset()
    evidence.StudyInstanceUID = study.study_instance_uid
    evidence.ReferencedSeriesSequence = Sequence(series_items)
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([evidence])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(KOS_SOP_CLASS)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


class NothingToReject(ValueError):
    """The form named no instance of the study (or only ones already rejected)."""


def reject_from_portal(study: Study, code: str, *, series_uids: Iterable[str] = (),
                       instance_uids: Iterable[str] = (), audit: StoreAudit) -> Rejection:
    """Reject instances of ``study`` as a sender would: build a real rejection note, store
    it through the one ingest path (so it is kept, exported and replicated like any
    object) and let ingest apply it. The caller has decided the principal may."""
    from .ingest import ingest

    chosen = list(Instance.objects.select_related("series").filter(
        Q(series__series_instance_uid__in=list(series_uids))
        | Q(sop_instance_uid__in=list(instance_uids)), series__study=study,
    ).order_by("series_id", "instance_number", "pk"))
    if not chosen:
        raise NothingToReject("choose the series or images to reject")
    note = build_note(study, chosen, code)
    result = ingest(BytesIO(note), source=f"portal:{audit.actor.username}"[:128], audit=audit)
    if not result.accepted:
        raise RuntimeError(f"the rejection note was not stored: {result.reason}")
    found = Rejection.objects.filter(kos_sop_instance_uid=result.sop_instance_uid).first()
    if found is None:
        raise PermissionError("the rejection note was stored but not applied")
    return found
