"""Writing a study's report: a preliminary, its final version, an amendment.

Every version is a new row and a new DICOM object (an Encapsulated PDF of its text,
:mod:`reports.pdf` and :mod:`reports.dicom_report`) stored through the one ingest path, in
one transaction with its row, the superseding of the version before it, the study's
``report_status`` and the REPORT entry on the trail: all of it is committed, or none.
Stored objects are immutable, so nothing is edited in place:

- a preliminary may be replaced while it is preliminary (each save is a new version);
- finalizing writes the final version (signed with the doctor's name and CRM);
- a final report is never replaced by a preliminary; it is amended by a new final version,
  the old one kept and marked superseded.

Each final version is also queued, in the same transaction, for the EHR as an ``ORU^R01``
(:mod:`orders.results`).

Who may write is :func:`imaging.policies.decide` with ``Action.REPORT``; a refusal is on
the trail and the caller answers 404.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone, translation
from django.utils.formats import date_format
from django.utils.translation import gettext as _

from audit.models import AuditAction, Outcome
from audit.trail import Actor, Target, record
from imaging import blobs, policies
from imaging.ingest import Outcome as IngestOutcome
from imaging.ingest import ingest
from imaging.models import Instance, ReportStatus, Study
from imaging.principals import as_principal
from imaging.store_audit import StoreAudit
from orders import results

from . import dicom_report, pdf
from .models import Report

if TYPE_CHECKING:
    import datetime

    from accounts.models import User
    from imaging.principals import Caller

Status = Report.Status
REPORT_SERIES_NUMBER = 999
VIA = "report"
#: How many characters a report's findings and impression may hold, each.
MAX_TEXT = 20_000
#: And an amendment's reason.
MAX_REASON = 2_000


class ReportRefused(ValueError):
    """Why a version was not written, in words for the doctor."""


class NotAllowed(ReportRefused):
    """The caller may not write this study's report (the page answers 404)."""


class MissingReason(ReportRefused):
    """An amendment without its reason."""


class ReportNotStored(ReportRefused):
    """Ingest refused the report's DICOM object; no version was written."""


@dataclass(frozen=True)
class ReportText:
    findings: str
    impression: str

    def cleaned(self) -> ReportText:
        return ReportText(self.findings.strip(), self.impression.strip())


# --- reading -----------------------------------------------------------------------------


def current_report(study: Study) -> Report | None:
    """The study's current version (preliminary or final), or None."""
    return (Report.objects.select_related("instance").filter(study=study.pk,
                                                             superseded__isnull=True).first())


def versions(study: Study) -> list[Report]:
    """Every version of the study's report, the newest first."""
    return list(Report.objects.select_related("instance").filter(study=study.pk)
                .order_by("-version"))


def missing_signature(user: User) -> str:
    """What the doctor must fill in her profile before she can sign, or ""."""
    if not user.professional_id.strip():
        return _("Fill in your professional registration (CRM) in your profile to sign "
                 "reports.")
    if not user.get_full_name().strip():
        return _("Fill in your name in your profile to sign reports.")
    return ""


# --- writing -----------------------------------------------------------------------------


def save_preliminary(caller: Caller, actor: Actor, study: Study, text: ReportText) -> Report:
    """Save the text as the study's preliminary report (a new version if there is one)."""
    return _write(caller, actor, study, text, Status.PRELIMINARY, "preliminary")


def finalize(caller: Caller, actor: Actor, study: Study, text: ReportText) -> Report:
    """Write the final, signed version (superseding the preliminary, if there is one)."""
    return _write(caller, actor, study, text, Status.FINAL, "final")


def amend(caller: Caller, actor: Actor, study: Study, text: ReportText, reason: str) -> Report:
    """Amend the final report: a new final version, saying why; the old one is kept,
    superseded. Whoever read the old version must be able to learn why it changed."""
    return _write(caller, actor, study, text, Status.FINAL, "amendment", reason=reason)


#: Which current version each kind of write may follow (None: no report yet).
FOLLOWS: dict[str, set[str | None]] = {
    "preliminary": {None, Status.PRELIMINARY},
    "final": {None, Status.PRELIMINARY},
    "amendment": {Status.FINAL},
}


def _write(caller: Caller, actor: Actor, study: Study, text: ReportText, status: str,
           event: str, *, reason: str = "") -> Report:
    principal = as_principal(caller)
    decision = policies.decide(principal, policies.Action.REPORT, study.patient)
    if not decision:
        record(AuditAction.REPORT, actor, Target.study(study), Outcome.DENIED,
               reason=decision.why, detail={"event": event})
        raise NotAllowed(decision.why)
    author = principal.user
    assert author is not None  # only accounts may write
    if problem := missing_signature(author):
        raise ReportRefused(problem)
    text = text.cleaned()
    if not (text.findings or text.impression):
        raise ReportRefused(_("Write the findings or the impression."))
    if max(len(text.findings), len(text.impression)) > MAX_TEXT:
        raise ReportRefused(_("The report is too long."))
    reason = reason.strip()
    if event == "amendment" and not reason:
        raise MissingReason(_("Say why the final report is amended."))
    if len(reason) > MAX_REASON:
        raise ReportRefused(_("The reason for the amendment is too long."))
    stored_key = ""
    try:
        with transaction.atomic():
            locked = Study.objects.select_for_update().select_related("patient").get(
                pk=study.pk)
            current = current_report(locked)
            _check_follows(event, current)
            now = timezone.now()
            report = Report(
                study=locked, status=status, findings=text.findings,
                impression=text.impression, author=author,
                author_name=author.get_full_name().strip(),
                author_professional_id=author.professional_id.strip(), created=now,
                signed=now if status == Status.FINAL else None, supersedes=current,
                amendment=event == "amendment", amendment_reason=reason,
                version=_next_version(locked),
            )
            obj = _dicom_object(locked, report, current)
            result = ingest(io.BytesIO(obj.data), source=f"{VIA}:{author.get_username()}",
                            audit=StoreAudit(actor, VIA, _clinics(locked),
                                             locked.patient.clinic_id))
            if result.outcome != IngestOutcome.STORED or result.instance_id is None:
                raise ReportNotStored(result.reason)
            report.instance = Instance.objects.get(pk=result.instance_id)
            stored_key = report.instance.blob_key
            if current is not None:
                current.superseded = now
                current.save(update_fields=["superseded"])
            report.save()
            Study.objects.filter(pk=locked.pk).update(report_status=ReportStatus(status))
            record(AuditAction.REPORT, actor, Target.study(locked), Outcome.ALLOWED,
                   detail=_detail(report, event, decision))
            # A final version goes to the EHR (ORU^R01): queued in this transaction, so a
            # crash never loses one; sent once it commits.
            results.queue(report)
    except ReportNotStored as refused:
        record(AuditAction.REPORT, actor, Target.study(study), Outcome.FAILED,
               reason=str(refused), detail={"event": event})
        raise
    except BaseException:
        if stored_key:  # indexed in a savepoint that the rollback took back
            blobs.delete(stored_key)
        raise
    study.report_status = ReportStatus(status)
    return report


def _check_follows(event: str, current: Report | None) -> None:
    if (current.status if current else None) in FOLLOWS[event]:
        return
    if current is not None and current.is_final:
        raise ReportRefused(_("The report is final: it can only be amended."))
    raise ReportRefused(_("Only a final report can be amended."))


def _next_version(study: Study) -> int:
    last = Report.objects.filter(study=study).order_by("-version").values_list(
        "version", flat=True).first()
    return (last or 0) + 1


def _clinics(study: Study) -> frozenset[int] | None:
    """The report is stored for the study's patient's clinic only."""
    clinic = study.patient.clinic_id
    return frozenset({clinic}) if clinic is not None else None


def _detail(report: Report, event: str, decision: policies.Decision) -> dict[str, Any]:
    detail: dict[str, Any] = {
        "event": event, "version": report.version, "status": report.status,
        "sop_instance_uid": report.instance.sop_instance_uid,
    }
    if report.supersedes is not None:
        detail["supersedes"] = report.supersedes.version
    if report.amendment_reason:
        detail["amendment_reason"] = report.amendment_reason
    if decision.platform:
        detail["platform_wide"] = True
    return detail


# --- the stored object -------------------------------------------------------------------


def _dicom_object(study: Study, report: Report, current: Report | None,
                  ) -> dicom_report.ReportObject:
    """The version's Encapsulated PDF, in the study's report series (new for the first)."""
    with translation.override(settings.LANGUAGE_CODE):
        document = _document(study, report)
        title = document.title
        series_description = _("Reports")
    previous = current or Report.objects.filter(study=study).order_by("-version").first()
    return dicom_report.encapsulated_pdf(
        _study_attributes(study), pdf.render(document, settings.REPORT_PDF_FONT),
        title=title, content=timezone.localtime(report.created),
        series_instance_uid=(previous.instance.series.series_instance_uid
                             if previous is not None else None),
        series_number=REPORT_SERIES_NUMBER, instance_number=report.version,
        series_description=series_description,
    )


def _study_attributes(study: Study) -> dict[str, Any]:
    """The Patient and General Study attributes of the study as it was stored (its first
    object), so the report files under the same patient and study."""
    metadata = (Instance.objects.filter(series__study=study).order_by("pk")
                .values_list("metadata", flat=True).first())
    attributes = dicom_report.study_attributes(metadata or {})
    attributes.setdefault("0020000D", {"vr": "UI", "Value": [study.study_instance_uid]})
    return attributes


def _when(moment: datetime.datetime) -> str:
    return date_format(timezone.localtime(moment), "DATETIME_FORMAT")


def _document(study: Study, report: Report) -> pdf.ReportDocument:
    """What the version's PDF says, in the portal's language."""
    patient = study.patient
    facts = [
        (_("Patient"), patient.name.replace("^", " ").strip() or "—"),
        (_("Patient ID"), patient.patient_id or "—"),
        (_("Birth date"), date_format(patient.birth_date, "SHORT_DATE_FORMAT")
         if patient.birth_date else "—"),
        (_("Exam"), study.description or "—"),
        (_("Exam date"), date_format(study.study_date, "SHORT_DATE_FORMAT")
         if study.study_date else "—"),
        (_("Modality"), ", ".join(m for m in study.modalities.split("\\")
                                  if m and m != dicom_report.MODALITY) or "—"),
        (_("Accession number"), study.accession_number or "—"),
    ]
    if report.is_final:
        status = _("Amended final report") if report.amendment else _("Final report")
        signature = [report.signature, _("Signed on %(when)s") % {"when": _when(report.created)}]
    else:
        status = _("Preliminary report: not signed, subject to change")
        signature = [report.signature,
                     _("Written on %(when)s, not signed") % {"when": _when(report.created)}]
    notes = [_("Version %(version)d of this report; it replaces version %(previous)d.")
             % {"version": report.version, "previous": report.supersedes.version}
             ] if report.supersedes is not None else []
    if report.amendment_reason:
        notes.append(_("Reason for the amendment: %(reason)s") % {
            "reason": report.amendment_reason})
    return pdf.ReportDocument(
        title=_("Imaging report") if report.is_final else _("Preliminary imaging report"),
        facts=facts,
        sections=[(_("Findings"), report.findings), (_("Impression"), report.impression)],
        status=status, signature=signature, author=report.signature,
        language=translation.get_language() or "pt-BR", created=report.created,
        notes=notes,
    )
