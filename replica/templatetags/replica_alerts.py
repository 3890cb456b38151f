"""``{% unrepaired_alerts as count %}``: the open integrity alerts for the admin index notice
(a tag rather than a context processor, so only the admin index pays for the query)."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()


@register.simple_tag(takes_context=True)
def unrepaired_alerts(context: dict[str, Any]) -> int | None:
    from replica.admin import open_alerts

    request = context.get("request")
    return open_alerts(request) if request is not None else None
