"""The second-factor page: enrol a TOTP app, then verify a code at each sign-in."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django_otp import login as otp_login

from audit import auth_events

from . import second_factor
from .models import User


@login_required
def two_factor(request: HttpRequest) -> HttpResponse:
    """Enrol a TOTP app on first use, then ask for a code at every sign-in.

    Patients come here by choice (a link on their exams page); the device counts only once
    a code from it is confirmed, so leaving half-way changes nothing.
    """
    user = request.user
    assert isinstance(user, User)
    device = second_factor.confirmed_device(user)
    enrolling = device is None
    if device is None:
        device = second_factor.pending_device(user)
    error = ""
    next_url = request.POST.get("next") or request.GET.get("next") or "/"
    if not url_has_allowed_host_and_scheme(next_url, {request.get_host()},
                                           require_https=request.is_secure()):
        next_url = "/"
    if request.method == "POST":
        if second_factor.verify(device, request.POST.get("token", "")):
            otp_login(request, device)
            return redirect(next_url)
        auth_events.second_factor_failed(request)
        error = _("That code is not valid. Check your phone's clock and try again.")
    # A patient turning it on by choice is told what changes; staff are told it is required.
    context = {"enrolling": enrolling, "error": error, "next": next_url,
               "voluntary": not user.needs_second_factor}
    if enrolling:
        uri = second_factor.provisioning_uri(device)
        context.update(qr=second_factor.qr_svg(uri), secret=device.config_url.split(
            "secret=")[1].split("&")[0])
    return render(request, "registration/two_factor.html", context)
