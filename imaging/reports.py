"""The SOP classes of a study's report: a structured report (SR) or an encapsulated
PDF/CDA, as report systems send them to the archive."""

from __future__ import annotations

REPORT_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
    "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
    "1.2.840.10008.5.1.4.1.1.104.2",  # Encapsulated CDA
})
