"""The staff pages of orders: the order list and the form where an order is entered by
hand. Views are thin: the work is orders.listing's and orders.handling's."""

from __future__ import annotations

from http import HTTPStatus
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _

from accounts.models import Clinic
from audit.trail import Actor
from imaging import policies
from imaging.policies import Action
from imaging.principals import of_request
from imaging.worklist import MODALITIES, BadQuery
from portal.navigation import staff_page

from . import handling, listing
from .forms import OrderForm
from .hl7_messages import OrderFacts, PatientFacts, Refused
from .models import ScheduledProcedure


@login_required
@staff_page
def order_list(request: HttpRequest) -> HttpResponse:
    """The scheduled procedures of the patients the caller may see, every status (a
    completed one with its study), a page at a time; one audit entry per page shown."""
    principal = of_request(request)
    may_order = bool(policies.decide(principal, Action.STORE))
    if not policies.decide(principal, Action.BROWSE):
        # Technicians enter orders but do not browse patients' records.
        if may_order:
            return redirect("orders:new")
        raise Http404
    try:
        query = listing.parse(request.GET)
    except BadQuery as exc:
        return HttpResponse(str(exc), status=HTTPStatus.BAD_REQUEST,
                            content_type="text/plain; charset=utf-8")
    page = listing.search(principal, query)
    listing.record_page(Actor.from_request(request), page, query)
    return render(request, "orders/order_list.html", {
        "page": page, "query": query, "may_order": may_order,
        "statuses": ScheduledProcedure.Status.choices, "modalities": MODALITIES,
        "previous_href": _href(query, page.number - 1) if page.has_previous else "",
        "next_href": _href(query, page.number + 1) if page.has_next else "",
    })


def _href(query: listing.OrderQuery, page: int) -> str:
    return "?" + urlencode(query.params(page=page))


@login_required
def new_order(request: HttpRequest) -> HttpResponse:
    principal = of_request(request)
    if not policies.decide(principal, Action.STORE):
        raise Http404
    clinic_ids = principal.clinic_ids
    clinics = Clinic.objects.all() if clinic_ids is None else Clinic.objects.filter(
        pk__in=sorted(clinic_ids))
    form = OrderForm(request.POST or None, clinics=clinics)
    error = ""
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            handling.schedule_by_hand(
                principal, Actor.from_request(request), data["clinic"].pk,
                PatientFacts(data["patient_id"], data["patient_name"],
                             data["birth_date"], data["sex"]),
                OrderFacts("NW", "", "", data["accession_number"], "",
                           data["description"], data["modality"], data["station"],
                           data["scheduled"].replace(tzinfo=None),
                           data["referring_physician"], data["priority"]))
        except Refused as exc:
            error = _("The order could not be scheduled: %(reason)s") % {"reason": exc.reason}
        else:
            return redirect("orders:new")
    return render(request, "orders/new_order.html", {
        "form": form, "error": error,
        "may_list": bool(policies.decide(principal, Action.BROWSE))})
