"""Access codes in the admin: issued from the patient list (action "Issue access code"),
printed on a receipt (and, for one patient, optionally sent by email), listed and revoked
here. The plaintext is shown only on the receipt and in that email; only its hash is
stored."""

from __future__ import annotations

import datetime
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import validate_email
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from audit.admin_reads import AuditedReadsMixin
from audit.trail import Actor
from imaging.admin_scope import ClinicScopedAdmin
from imaging.models import Patient

from . import codes
from .models import AccessCode, lifetime


@admin.register(AccessCode)
class AccessCodeAdmin(AuditedReadsMixin, ClinicScopedAdmin):
    list_display = ("prefix", "patient", "created", "created_by", "expires", "uses",
                    "last_used", "failures", "revoked")
    list_filter = ("revoked", "expires")
    search_fields = ("prefix", "patient__name", "patient__patient_id")
    list_select_related = ("patient", "created_by")
    raw_id_fields = ("patient",)
    actions = ["revoke"]
    date_hierarchy = "created"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # issued from the patient list, so the receipt shows the code once

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoked, never deleted: the record of who was given access stays

    def get_urls(self) -> list[URLPattern]:
        issue = path("issue/", self.admin_site.admin_view(self.issue_view),
                     name="patients_accesscode_issue")
        return [issue, *super().get_urls()]

    @admin.action(description=_("Revoke the selected access codes now"))
    def revoke(self, request: HttpRequest, queryset: QuerySet[AccessCode]) -> None:
        actor = Actor.from_request(request)
        try:
            count = sum(codes.revoke_code(access, request.user, actor=actor)
                        for access in queryset.filter(revoked__isnull=True)
                        .select_related("patient"))
        except codes.NotAllowed:
            raise PermissionDenied from None
        self.message_user(request, ngettext("%(count)d access code revoked.",
                                            "%(count)d access codes revoked.", count)
                          % {"count": count}, messages.SUCCESS)

    def issue_view(self, request: HttpRequest) -> HttpResponse:
        """Confirm, then issue one code per patient and show the printable receipts.

        With one patient, the code may also go by email (the receipt is still shown).
        """
        if not codes.may_issue(request.user):
            raise PermissionDenied
        data = request.POST if request.method == "POST" else request.GET
        ids = [int(i) for i in data.get("patients", "").split(",") if i.strip().isdigit()]
        # Only patients of the issuer's clinics: others are not listed, not even by name.
        patients = list(codes.issuable_patients(request.user).filter(pk__in=ids)
                        .select_related("clinic").order_by("name", "pk"))
        if not patients:
            raise PermissionDenied
        default_days = round(lifetime().total_seconds() / 86400)
        email = data.get("email", "").strip()
        error = ""
        if request.method == "POST":
            error = self._email_error(email, patients)
        if request.method == "POST" and not error:
            try:
                days = max(1, min(int(data.get("days", default_days)), 365))
            except ValueError:
                days = default_days
            actor = Actor.from_request(request)
            receipts = [codes.issue_code(p, request.user, actor=actor,
                                         expires_in=datetime.timedelta(days=days))
                        for p in patients]
            portal_url = request.build_absolute_uri(reverse("patients:login"))
            sent = not_sent = False
            if email:
                access, code = receipts[0]
                try:
                    codes.send_code(access.patient, code, email, portal_url, access.expires,
                                    actor=actor)
                    sent = True
                except codes.CodeNotSent:
                    not_sent = True
            return render(request, "patients/receipt.html", {
                "receipts": [{"access": access, "code": code, "patient": access.patient,
                              "name": access.patient.name.replace("^", " ").strip()}
                             for access, code in receipts],
                "portal_url": portal_url, "email": email, "sent": sent, "not_sent": not_sent,
            })
        context = {**self.admin_site.each_context(request), "patients": patients,
                   "ids": ",".join(str(p.pk) for p in patients),
                   "days": data.get("days", default_days), "email": email, "error": error,
                   "title": _("Issue access codes"), "opts": self.model._meta}
        return TemplateResponse(request, "patients/issue_confirm.html", context)

    @staticmethod
    def _email_error(email: str, patients: list[Patient]) -> str:
        """Why the optional email cannot be used, in words for the reception desk."""
        if not email:
            return ""
        if len(patients) != 1:
            return str(_("A code goes by email only when one patient is selected."))
        try:
            validate_email(email)
        except ValidationError:
            return str(_("Enter a valid email address, or leave it empty."))
        return ""


@admin.action(description=_("Issue an access code (printable receipt)"))
def issue_access_code(modeladmin: Any, request: HttpRequest, queryset: QuerySet[Patient]
                      ) -> HttpResponseRedirect:
    ids = ",".join(str(pk) for pk in queryset.values_list("pk", flat=True))
    return HttpResponseRedirect(f"{reverse('admin:patients_accesscode_issue')}?patients={ids}")


# The patient list belongs to imaging's admin; the action that issues codes is ours, added
# to it here (imaging's admin is registered first: it comes earlier in INSTALLED_APPS).
_patient_admin = admin.site.get_model_admin(Patient)
_patient_admin.actions = [*(_patient_admin.actions or ()), issue_access_code]
