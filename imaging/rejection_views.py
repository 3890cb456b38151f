"""The study page's "reject images" form: an admin rejects series or images of a study
with a CID 7011 reason, as a rejection note made and stored by :mod:`imaging.rejection`."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.shortcuts import redirect
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from audit.models import AuditAction
from audit.trail import Actor, Target
from portal.navigation import staff_page

from . import access, policies, principals, rejection
from .models import Instance, Study
from .store_audit import StoreAudit


class RejectForm(forms.Form):
    reason = forms.ChoiceField(label=gettext_lazy("Reason"), choices=rejection.REASON_CHOICES)
    series = forms.MultipleChoiceField(required=False, choices=())
    instance = forms.MultipleChoiceField(required=False, choices=())

    def __init__(self, study: Study, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        series = list(study.series.values_list("series_instance_uid", flat=True))
        self.fields["series"].choices = [(uid, uid) for uid in series]  # type: ignore[attr-defined]
        instances = Instance.objects.filter(series__study=study).values_list(
            "sop_instance_uid", flat=True)
        self.fields["instance"].choices = [(uid, uid) for uid in instances]  # type: ignore[attr-defined]

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        if not data.get("series") and not data.get("instance"):
            raise forms.ValidationError(_("Choose the series or images to reject."))
        return data


def instances_by_series(study: Study) -> dict[str, list[tuple[str, int | None]]]:
    """The study's served images by series, for the form's per-image choices."""
    out: dict[str, list[tuple[str, int | None]]] = {}
    for series_uid, sop_uid, number in Instance.objects.filter(series__study=study).order_by(
            "series_id", "instance_number", "pk").values_list(
            "series__series_instance_uid", "sop_instance_uid", "instance_number"):
        out.setdefault(series_uid, []).append((sop_uid, number))
    return out


def may_reject(principal: principals.Principal, study: Study) -> bool:
    """Whoever may see the study and store for its patient: its clinic's admins."""
    return bool(policies.decide(principal, policies.Action.VIEW, study.patient)
                and policies.decide(principal, policies.Action.STORE, study.patient))


@login_required
@require_POST
@staff_page(refused=lambda kwargs: Target(level="study", uid=kwargs["uid"][:128]))
def reject(request: HttpRequest, uid: str) -> HttpResponse:
    principal = principals.of_request(request)
    actor = Actor.from_request(request)
    found = access.get_or_404(principal, actor, AuditAction.VIEW, "study", uid)
    assert isinstance(found, Study)
    if not may_reject(principal, found):
        return HttpResponseForbidden(_("You may not reject images of this study."))
    form = RejectForm(found, request.POST)
    if not form.is_valid():
        for errors in form.errors.values():
            for error in errors:
                messages.error(request, str(error))
        return redirect("imaging:study_detail", uid=uid)
    done = rejection.reject_from_portal(
        found, form.cleaned_data["reason"], series_uids=form.cleaned_data["series"],
        instance_uids=form.cleaned_data["instance"],
        audit=StoreAudit.within(actor, "study page", principal))
    messages.success(request, _("%(n)d images rejected: %(reason)s.") % {
        "n": done.rejected_count, "reason": dict(rejection.REASON_CHOICES)[done.code_value]})
    return redirect("imaging:study_detail", uid=uid)
