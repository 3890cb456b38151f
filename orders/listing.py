"""The staff order list: which scheduled procedures a page shows, a page at a time.

Plain functions between the page and the policy, as :mod:`imaging.worklist` is for
studies: :func:`parse` reads the page's GET parameters (refusing bad values with a message
for a 400) and :func:`search` narrows :func:`visible_procedures` by them, so the page only
ever lists orders of patients the caller may see. Unlike the DICOM worklist, every status
is listed: staff want to see an order completed, and which study it became.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from django.db.models import F, QuerySet
from django.utils.translation import gettext as _

from audit.models import AuditAction, Outcome
from audit.trail import Actor, Target, record
from imaging import policies
from imaging.paging import PAGE_SIZE, BadNumber, PageNumbers, page_count, whole_number
from imaging.principals import Principal
from imaging.worklist import BadQuery, date_param

from .models import ScheduledProcedure

_CODE = re.compile(r"[A-Z0-9_]{1,16}")  # a modality (DICOM CS)


def visible_procedures(principal: Principal) -> QuerySet[ScheduledProcedure]:
    """The orders of the patients ``principal`` may see (:func:`policies.visible_patients`):
    the one scoping of orders, for this page and the DICOM worklist."""
    return ScheduledProcedure.objects.filter(
        patient__in=policies.visible_patients(principal).values("pk"))


@dataclass(frozen=True)
class OrderQuery:
    """One order list as asked; empty means "any"."""

    status: str = ""
    date_from: datetime.date | None = None
    date_to: datetime.date | None = None
    modality: str = ""
    page: int = 1

    def params(self, **changes: Any) -> dict[str, str]:
        """The GET parameters that ask for this list again (with ``changes``), for the
        paging links; defaults left out."""
        params = {}
        for key, value in {**asdict(self), **changes}.items():
            if value in ("", None) or (key == "page" and value == 1):
                continue
            params[key] = value.isoformat() if isinstance(value, datetime.date) else str(value)
        return params

    def detail(self) -> dict[str, Any]:
        """The filters set, for the audit entry."""
        return {"page": self.page, **{k: v for k, v in self.params().items() if k != "page"}}


def parse(params: Mapping[str, str]) -> OrderQuery:
    """The list ``params`` ask for. Raises :class:`BadQuery`."""
    status = str(params.get("status", "")).strip()
    if status and status not in ScheduledProcedure.Status.values:
        raise BadQuery(_("status must be one of %(choices)s, not %(value)r")
                       % {"choices": ", ".join(ScheduledProcedure.Status.values),
                          "value": status[:20]})
    date_from, date_to = date_param(params, "date_from"), date_param(params, "date_to")
    if date_from and date_to and date_from > date_to:
        raise BadQuery(_("date_from must not be after date_to"))
    modality = str(params.get("modality", "")).strip().upper()
    if modality and not _CODE.fullmatch(modality):
        raise BadQuery(_("%(name)s must be a DICOM code such as CT or CHEST, not %(value)r")
                       % {"name": "modality", "value": modality[:20]})
    try:
        page = whole_number("page", str(params.get("page", "")), default=1, minimum=1)
    except BadNumber as exc:
        raise BadQuery(str(exc)) from exc
    return OrderQuery(status=status, date_from=date_from, date_to=date_to,
                      modality=modality, page=page)


@dataclass(frozen=True)
class OrderPage(PageNumbers):
    orders: list[ScheduledProcedure]
    number: int
    has_next: bool
    count: int


def search(principal: Principal, query: OrderQuery) -> OrderPage:
    """The page of orders ``query`` asks for, the latest scheduled first; a page past the
    last shows the last. Orders are far fewer than studies, so the total is counted."""
    orders = visible_procedures(principal).select_related("patient", "study")
    if query.status:
        orders = orders.filter(status=query.status)
    if query.date_from:
        orders = orders.filter(scheduled_date__gte=query.date_from)
    if query.date_to:
        orders = orders.filter(scheduled_date__lte=query.date_to)
    if query.modality:
        orders = orders.filter(modality=query.modality)
    orders = orders.order_by(F("scheduled_date").desc(),
                             F("scheduled_time").desc(nulls_last=True), F("pk").desc())
    count = orders.count()
    number = min(query.page, page_count(count))
    start = (number - 1) * PAGE_SIZE
    rows = list(orders[start:start + PAGE_SIZE + 1])
    return OrderPage(orders=rows[:PAGE_SIZE], number=number,
                     has_next=len(rows) > PAGE_SIZE, count=count)


def record_page(actor: Actor, page: OrderPage, query: OrderQuery) -> None:
    """The page's audit entry: one per patient whose orders it shows (one saying so when
    it shows none), as the study list records its pages, so each patient's access history
    shows who saw her orders."""
    patients = {order.patient_id: order.patient for order in page.orders}
    detail = {"list": "orders", "query": query.detail(), "hits": len(page.orders)}
    targets = [Target.patient(patient) for patient in patients.values()]
    record(AuditAction.SEARCH, actor, targets or None, Outcome.ALLOWED, detail=detail)
