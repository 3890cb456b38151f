"""Images find their order: a new study whose accession number is that of a scheduled
procedure of the same patient is that procedure's study (called once, from ingest)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db.models import Case, F, Value, When

if TYPE_CHECKING:
    from imaging.models import Study


def link_study(study: Study) -> int:
    """Link ``study`` to the order of its accession number and patient, if there is one
    without a study yet; returns how many orders were linked (0 or 1: an accession number
    names one order of a clinic).

    An order still scheduled is completed by its images: the modality performed it without
    reporting MPPS, and the worklist must not offer it again. One in progress waits for its
    MPPS N-SET, which says when the modality is done.
    """
    if not study.accession_number:
        return 0
    from .models import ScheduledProcedure

    scheduled, completed = ScheduledProcedure.Status.SCHEDULED, \
        ScheduledProcedure.Status.COMPLETED
    return ScheduledProcedure.objects.filter(
        accession_number=study.accession_number, patient_id=study.patient_id,
        study__isnull=True).update(
            study=study,
            status=Case(When(status=scheduled, then=Value(completed)), default=F("status")))
