"""Reading a report: which versions a caller sees, decided by the policy and recorded.

Whoever may read the patient's data (``VIEW``, ``DOWNLOAD``) sees the study's current
final version. Preliminary and superseded versions are the reporting doctors' own: only
those who may write the report (``Action.REPORT``) see them. So a patient never sees a
preliminary report, and an amended report shows its latest final version.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import IO, TYPE_CHECKING

from django.http import Http404

from audit.models import AuditAction, Outcome
from audit.trail import Actor, Target, record
from imaging import access, blobs, policies
from imaging.models import Instance, Study
from imaging.reports import REPORT_SOP_CLASSES

from . import dicom_report
from .models import Report

if TYPE_CHECKING:
    from imaging.principals import Caller

DRAFT = "only those who write the report see a preliminary or superseded version"


def for_everyone(report: Report) -> bool:
    """The version every reader of the patient's data sees: the current final one."""
    return report.is_final and report.is_current


def may_write(caller: Caller, study: Study) -> bool:
    return bool(policies.decide(caller, policies.Action.REPORT, study.patient))


def visible_report(caller: Caller, study: Study) -> Report | None:
    """The current version as ``caller`` may see it (no audit: for a page that already
    recorded its read of the study)."""
    report = (Report.objects.select_related("instance")
              .filter(study=study.pk, superseded__isnull=True).first())
    if report is None or for_everyone(report) or may_write(caller, study):
        return report
    return None


def visible_versions(caller: Caller, study: Study) -> list[Report]:
    """The versions ``caller`` may see, the newest first."""
    reports = Report.objects.filter(study=study.pk).order_by("-version")
    if may_write(caller, study):
        return list(reports)
    return [r for r in reports if for_everyone(r)]


def authorize(caller: Caller, actor: Actor, action: AuditAction, report: Report,
              ) -> policies.Decision:
    """May ``caller`` read (``VIEW``) or download (``DOWNLOAD``) this version? Decided and
    recorded once; the caller answers 404 to a refusal."""
    study = report.study
    decision = policies.decide(caller, action, study.patient)
    if decision and not for_everyone(report) and not may_write(caller, study):
        decision = policies.Decision(False, why=DRAFT)
    detail: dict[str, object] = {"report": report.pk, "version": report.version,
                                 "status": report.status}
    if decision.platform:
        detail["platform_wide"] = True
    record(action, actor, Target.study(study),
           Outcome.ALLOWED if decision.allowed else Outcome.DENIED,
           reason=decision.why, break_glass=decision.break_glass, detail=detail)
    return decision


def version_or_404(caller: Caller, actor: Actor, action: AuditAction, pk: int) -> Report:
    """The report version ``pk`` if ``caller`` may ``action`` it, else 404 (recorded)."""
    report = (Report.objects.select_related("study__patient", "instance")
              .filter(pk=pk).first())
    if report is None:
        record(action, actor, Target("report", str(pk)), Outcome.FAILED,
               reason="no such report")
        raise Http404
    if not authorize(caller, actor, action, report):
        raise Http404
    return report


def current_or_404(caller: Caller, actor: Actor, action: AuditAction, study_uid: str,
                   ) -> Report:
    """The study's current version if ``caller`` may ``action`` it, else 404 (recorded):
    an unknown study, a study the caller may not read and a study without a report the
    caller may see all look the same."""
    study = Study.objects.select_related("patient").filter(
        study_instance_uid=study_uid).first()
    if study is None:
        access.get_or_404(caller, actor, action, "study", study_uid)  # records, raises
        raise Http404
    report = (Report.objects.select_related("study__patient", "instance")
              .filter(study=study, superseded__isnull=True).first())
    if report is None:
        access.authorize(caller, actor, action, study, detail={"report": None})
        raise Http404
    if not authorize(caller, actor, action, report):
        raise Http404
    return report


def final_reports(studies: Iterable[Study]) -> dict[int, Report]:
    """The current final version of those ``studies`` that have one (one query)."""
    return {r.study_id: r for r in Report.objects.filter(
        study__in=[s.pk for s in studies], superseded__isnull=True, status=Report.Status.FINAL)}


def received_reports(studies: Iterable[Study]) -> set[int]:
    """Those ``studies`` holding a report object the portal did not write (a report system
    sent it, as :mod:`imaging.reports` finds them)."""
    pks = [s.pk for s in studies]
    found = (Instance.objects.filter(series__study__in=pks, sop_class_uid__in=REPORT_SOP_CLASSES,
                                     report__isnull=True)
             .values_list("series__study", flat=True).distinct())
    return {int(pk) for pk in found}


def open_pdf(report: Report, chunk_size: int = blobs.CHUNK_SIZE,
             ) -> tuple[Iterator[bytes], int]:
    """The version's PDF, read from its stored DICOM object in chunks, and its length.
    The object is opened and checked now; it is closed when the chunks are read."""
    fp = blobs.open_blob(report.instance.blob_key)
    try:
        offset, length = dicom_report.pdf_span(fp)
    except BaseException:
        fp.close()
        raise
    return _span(fp, offset, length, chunk_size), length


def _span(fp: IO[bytes], offset: int, length: int, chunk_size: int) -> Iterator[bytes]:
    with fp:
        fp.seek(offset)
        while length > 0:
            chunk = fp.read(min(chunk_size, length))
            if not chunk:
                raise dicom_report.NotAReportPdf("the stored object ends inside its PDF")
            length -= len(chunk)
            yield chunk


def pdf_filename(report: Report) -> str:
    study = report.study
    day = study.study_date.strftime("%Y-%m-%d") if study.study_date else "exam"
    return f"report-{day}-v{report.version}.pdf"
