"""The second-factor pages: enrol a TOTP app (with a one-time link), then verify a code at
each sign-in."""

from __future__ import annotations

from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods
from django_otp import login as otp_login

from audit import auth_events

from . import enrolment, second_factor
from .models import User


@never_cache
@login_required
def two_factor(request: HttpRequest) -> HttpResponse:
    """Ask for a code at every sign-in; enrol a TOTP app when the account has none.

    Staff and doctors enrol only in a session an enrolment link or a password reset opened
    (:mod:`accounts.enrolment`); without one they are told to ask an admin. Patients come
    here by choice (a link on their exams page); the device counts only once a code from it
    is confirmed, so leaving half-way changes nothing.
    """
    user = request.user
    assert isinstance(user, User)
    device = second_factor.confirmed_device(user)
    enrolling = device is None
    if enrolling and not enrolment.may_enrol(request, user):
        return render(request, "registration/enrolment_needed.html", status=403)
    next_url = request.POST.get("next") or request.GET.get("next") or "/"
    if not url_has_allowed_host_and_scheme(next_url, {request.get_host()},
                                           require_https=request.is_secure()):
        next_url = "/"
    error = ""
    if request.method == "POST":
        if enrolling:
            device = second_factor.pending_device(user)
        if device is not None and second_factor.verify(device, request.POST.get("token", "")):
            otp_login(request, device)
            request.session.pop(enrolment.SESSION_KEY, None)
            return redirect(next_url)
        auth_events.second_factor_failed(request)
        error = _("That code is not valid. Check your phone's clock and try again.")
    # A patient turning it on by choice is told what changes; staff are told it is required.
    context = {"enrolling": enrolling, "error": error, "next": next_url,
               "voluntary": not user.needs_second_factor}
    if enrolling and request.method != "POST":
        # A new secret on every visit; after a wrong code the one already scanned stays.
        pending = second_factor.new_pending_device(user)
        uri = second_factor.provisioning_uri(pending)
        context.update(qr=second_factor.qr_svg(uri), secret=second_factor.secret(pending))
    return render(request, "registration/two_factor.html", context)


@never_cache
@require_http_methods(["GET", "POST"])
def enrol(request: HttpRequest, token: str) -> HttpResponse:
    """An enrolment link an admin issued: this session may enrol that account's phone.

    Opening it (GET) only asks to continue, so a mail scanner or a link preview that
    fetches it does not spend it; continuing (POST) does.
    """
    if request.method == "GET":
        found = enrolment.account(token)
        if found is None:
            return render(request, "registration/enrolment_link_invalid.html", status=404)
        return render(request, "registration/enrol.html", {"account": found})
    user = enrolment.redeem(token)
    if user is None:
        return render(request, "registration/enrolment_link_invalid.html", status=404)
    if request.user.is_authenticated and request.user.pk != user.pk:
        logout(request)  # someone else's session: the link is for its own account only
    enrolment.allow(request, user)
    two_factor_url = reverse("two_factor")
    if request.user.is_authenticated:
        return redirect(two_factor_url)
    return redirect(f"{reverse('login')}?next={two_factor_url}")
