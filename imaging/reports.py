"""Whether a study has its report: a structured report (SR) or an encapsulated PDF/CDA
stored in the study, as report systems send them to the archive."""

from __future__ import annotations

from collections.abc import Iterable

from .models import Instance, Study

REPORT_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
    "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
    "1.2.840.10008.5.1.4.1.1.104.2",  # Encapsulated CDA
})


def studies_with_report(studies: Iterable[Study]) -> set[int]:
    """Primary keys of those ``studies`` that hold a report object (one query)."""
    pks = [s.pk for s in studies]
    found = (
        Instance.objects.filter(series__study__in=pks, sop_class_uid__in=REPORT_SOP_CLASSES)
        .values_list("series__study", flat=True)
        .distinct()
    )
    return {int(pk) for pk in found}
