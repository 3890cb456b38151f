"""Account pages: the user's own DICOMweb API tokens."""

from __future__ import annotations

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_http_methods, require_POST

from audit import auth_events
from audit.trail import Actor

from .models import ApiToken


class TokenForm(forms.Form):
    name = forms.CharField(label=gettext_lazy("Name"), max_length=100,
                           help_text=gettext_lazy("Which client or device uses it"))
    expires = forms.DateTimeField(label=gettext_lazy("Expires"), required=False,
                                  help_text=gettext_lazy("Leave empty for no expiry"))


@login_required
@require_http_methods(["GET", "POST"])
def tokens(request: HttpRequest) -> HttpResponse:
    """List, create (the secret is shown once, on this response only) and revoke tokens."""
    form = TokenForm(request.POST or None)
    secret = ""
    if request.method == "POST" and form.is_valid():
        token, secret = ApiToken.issue(
            request.user,  # type: ignore[arg-type]
            form.cleaned_data["name"], form.cleaned_data["expires"],
        )
        auth_events.token_changed(Actor.from_request(request), token, "issued")
        form = TokenForm()
    return render(request, "accounts/tokens.html", {
        "form": form,
        "secret": secret,
        "tokens": ApiToken.objects.filter(user=request.user.pk),
        "dicomweb_hint": _("Send it as: Authorization: Bearer <token>"),
    })


@login_required
@require_POST
def revoke_token(request: HttpRequest, pk: int) -> HttpResponse:
    # Someone else's token is a 404, the same as no token at all.
    token = get_object_or_404(ApiToken, pk=pk, user=request.user.pk)
    if token.revoked is None:
        token.revoke()
        auth_events.token_changed(Actor.from_request(request), token, "revoked")
    return redirect("accounts:tokens")
