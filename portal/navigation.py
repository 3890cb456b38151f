"""Where each role lands, and the links it is offered: both from the one access policy.

A patient's home is their exams; a technician's is the upload page; staff who browse the
archive land on the study list. Staff pages are not offered to patients (nor to a
receipt-code session), and nobody is offered a page the policy would refuse.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, overload

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect

from accounts.models import Role
from audit.models import AuditAction, Outcome
from audit.trail import Actor, Target, record
from imaging import policies, principals


def is_patient(principal: principals.Principal) -> bool:
    return principal.kind == principals.Kind.CODE or principal.role == Role.PATIENT


def home_of(principal: principals.Principal) -> str:
    """The URL name of ``principal``'s home page."""
    if principal.kind == principals.Kind.ANONYMOUS:
        return "login"
    if is_patient(principal):
        return "patients:exams"
    if not policies.decide(principal, policies.Action.BROWSE) and policies.decide(
            principal, policies.Action.STORE):
        return "imaging:upload"
    return "imaging:study_list"


def home(request: HttpRequest) -> HttpResponse:
    return redirect(home_of(principals.of_request(request)))


def links(request: HttpRequest) -> dict[str, Any]:
    """Template context: ``nav``, what the signed-in principal is offered."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav": {}}
    principal = principals.of_request(request)
    patient = is_patient(principal)
    return {"nav": {
        "patient": patient,
        "studies": not patient and bool(policies.decide(principal, policies.Action.BROWSE)),
        "upload": not patient and bool(policies.decide(principal, policies.Action.STORE)),
        # The order list for staff who browse; the order form for those who enter orders
        # but do not browse (technicians), the list linking to it for the others.
        "orders": not patient and bool(policies.decide(principal, policies.Action.BROWSE)),
        "new_order": not patient and bool(policies.decide(principal, policies.Action.STORE)),
        "break_glass": bool(policies.decide(principal, policies.Action.BREAK_GLASS)),
        "sharing": bool(policies.decide(principal, policies.Action.BROWSE)),
        "tokens": bool(policies.decide(principal, policies.Action.MINT_TOKEN)),
        "admin": bool(user.is_staff),
    }}


View = Callable[..., HttpResponse]


@overload
def staff_page(view: View) -> View: ...


@overload
def staff_page(*, refused: Callable[[dict[str, Any]], Target]) -> Callable[[View], View]: ...


def staff_page(
    view: View | None = None, *, refused: Callable[[dict[str, Any]], Target] | None = None,
) -> View | Callable[[View], View]:
    """A staff workspace page, which a patient (own account or code session) never sees.

    By default a patient who reaches it by a bookmark or a typed URL is sent to their own
    home. With ``refused`` (a page about one patient, study or instance, built from the
    URL's arguments) the patient gets 404 instead, on the record as a denied view of that
    object. What staff may see on the page is still the policy's to decide.
    """

    def decorate(page: View) -> View:
        @functools.wraps(page)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            user = getattr(request, "user", None)
            principal = principals.of_request(request)
            if user is None or not user.is_authenticated or not is_patient(principal):
                return page(request, *args, **kwargs)
            if refused is None:
                return redirect(home_of(principal))
            record(AuditAction.VIEW, Actor.from_request(request), refused(kwargs),
                   Outcome.DENIED, reason="staff page; patients use their exam pages")
            raise Http404

        return wrapped

    return decorate(view) if view is not None else decorate
