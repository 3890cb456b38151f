"""``{% study_report study %}``: the study's report as the signed-in reader may see it
(the snippet ``reports/_study_report.html``), for pages that show a study."""

from __future__ import annotations

from typing import Any

from django import template

from imaging import principals
from imaging.models import Study
from reports import reading

register = template.Library()


@register.inclusion_tag("reports/_study_report.html", takes_context=True)
def study_report(context: template.Context, study: Study) -> dict[str, Any]:
    """The page must have recorded its read of ``study`` already; this adds no entry."""
    caller = principals.of_request(context["request"])
    return {
        "study": study,
        "report": reading.visible_report(caller, study),
        "report_history": reading.visible_versions(caller, study),
        "report_may_write": reading.may_write(caller, study),
        "request": context["request"],
    }
