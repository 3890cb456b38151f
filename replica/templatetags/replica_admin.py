"""The replica's notices on the admin index: the last successful restore drill, and a
warning when it is overdue. A template tag rather than a custom admin site or a context
processor: the query runs on the index page only, and other notices sit beside it in
``admin/_index_notices.html``."""

from __future__ import annotations

import datetime
from typing import Any

from django import template
from django.conf import settings
from django.utils import timezone
from django.utils.timesince import timesince

from replica import drill

register = template.Library()


@register.inclusion_tag("admin/replica/_restore_drill_notice.html", takes_context=True)
def restore_drill_notice(context: dict[str, Any]) -> dict[str, Any]:
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.has_perm("replica.view_drillreport"):
        return {"show": False}
    now = timezone.now()
    found = drill.status(now)
    if found.last_good is None and not found.overdue:
        return {"show": False}  # no replica, and no drill ever: nothing to say
    period = datetime.timedelta(seconds=settings.RESTORE_DRILL_INTERVAL_SECONDS)
    last_failed = (found.last if found.last is not None and not found.last.ok
                   and (found.last_good is None or found.last.started > found.last_good.started)
                   else None)
    good = found.last_good
    return {
        "show": True,
        "overdue": found.overdue,
        "last_good": good,
        "last_good_age": timesince(good.finished, now) if good and good.finished else "",
        "last_failed": last_failed,
        "period": timesince(now - period, now),
    }
