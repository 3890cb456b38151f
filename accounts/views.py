"""Account pages: the user's own profile (the name and CRM a doctor signs reports with),
her DICOMweb API tokens (minted by :mod:`accounts.tokens`); setting a password from a reset
link."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse_lazy
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_http_methods, require_POST

from audit.trail import Actor
from imaging import policies, principals

from . import enrolment
from . import tokens as api_tokens
from .models import ApiToken, Role, User


class ProfileForm(forms.ModelForm):  # type: ignore[type-arg]
    class Meta:
        model = User
        fields = ["first_name", "last_name", "professional_id"]
        help_texts = {"professional_id": gettext_lazy(
            "As you sign reports, with the council and state: CRM-RS 12345")}


@login_required
@require_http_methods(["GET", "POST"])
def profile(request: HttpRequest) -> HttpResponse:
    """One's own name and, for doctors, the CRM reports are signed with (a receipt-code
    session has no profile). Changes are on the model-change log (audit.model_changes)."""
    principal = principals.of_request(request)
    user = request.user
    if principal.kind == principals.Kind.CODE or not isinstance(user, User):
        raise Http404
    form = ProfileForm(request.POST or None, instance=user)
    if not (user.role == Role.DOCTOR or user.is_superuser):
        del form.fields["professional_id"]
    if request.method == "POST" and form.is_valid():
        form.save()
        target = request.POST.get("next", "")
        if url_has_allowed_host_and_scheme(target, {request.get_host()},
                                           require_https=request.is_secure()):
            return redirect(target)
        return redirect("accounts:profile")
    return render(request, "accounts/profile.html", {
        "form": form, "next": request.GET.get("next", request.POST.get("next", ""))})


class TokenForm(forms.Form):
    name = forms.CharField(label=gettext_lazy("Name"), max_length=100,
                           help_text=gettext_lazy("Which client or device uses it"))
    days = forms.IntegerField(label=gettext_lazy("Valid for (days)"), min_value=1,
                              max_value=settings.API_TOKEN_MAX_DAYS, required=False,
                              initial=settings.API_TOKEN_DEFAULT_DAYS,
                              help_text=gettext_lazy("Every token expires; at most a year"))


@login_required
@require_http_methods(["GET", "POST"])
def tokens(request: HttpRequest) -> HttpResponse:
    """List, create (the secret is shown once, on this response only) and revoke tokens."""
    principal = principals.of_request(request)
    may_mint = policies.decide(principal, policies.Action.MINT_TOKEN)
    form = TokenForm(request.POST or None)
    secret = ""
    status = 200
    if request.method == "POST" and (form.is_valid() or not may_mint):
        # One call either way: it mints, or records the refusal that the page explains.
        fields = form.cleaned_data if form.is_valid() else {}
        try:
            _token, secret = api_tokens.mint(
                principal, fields.get("name", request.POST.get("name", "")),
                days=fields.get("days"), actor=Actor.from_request(request))
            form = TokenForm()
        except api_tokens.NotAllowed:
            status = 403
    return render(request, "accounts/tokens.html", {
        "form": form,
        "secret": secret,
        "may_mint": bool(may_mint),
        "tokens": ApiToken.objects.filter(user=request.user.pk),
        "dicomweb_hint": _("Send it as: Authorization: Bearer <token>"),
    }, status=status)


@login_required
@require_POST
def revoke_token(request: HttpRequest, pk: int) -> HttpResponse:
    # Someone else's token is a 404, the same as no token at all.
    token = get_object_or_404(ApiToken, pk=pk, user=request.user.pk)
    api_tokens.revoke(token, actor=Actor.from_request(request))
    return redirect("accounts:tokens")


class PasswordResetConfirm(auth_views.PasswordResetConfirmView):
    """A password set through the reset link e-mailed to the account signs the person in,
    and this session may enrol a second factor if the account has none: the link proved
    the mailbox, which a password typed at the login page does not."""

    post_reset_login = True
    post_reset_login_backend = "accounts.backends.EmailOrUsernameBackend"
    success_url = reverse_lazy("two_factor")

    def form_valid(self, form: forms.Form) -> HttpResponse:
        response = super().form_valid(form)
        enrolment.allow(self.request, form.user)  # type: ignore[attr-defined]
        return response
