"""The staff page where an order is entered by hand; the work is orders.handling's."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _

from accounts.models import Clinic
from audit.trail import Actor
from imaging import policies
from imaging.policies import Action
from imaging.principals import of_request

from . import handling
from .forms import OrderForm
from .hl7_messages import OrderFacts, PatientFacts, Refused


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
                PatientFacts(data["patient_id"], data["patient_name"], None, ""),
                OrderFacts("NW", "", "", data["accession_number"], "",
                           data["description"], data["modality"], data["station"],
                           data["scheduled"].replace(tzinfo=None), "", data["priority"]))
        except Refused as exc:
            error = _("The order could not be scheduled: %(reason)s") % {"reason": exc.reason}
        else:
            return redirect("orders:new")
    return render(request, "orders/new_order.html", {"form": form, "error": error})
