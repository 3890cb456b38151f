from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django_otp.plugins.otp_totp.admin import TOTPDeviceAdmin as BaseTOTPDeviceAdmin
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit import actors
from audit.trail import Actor

from . import enrolment
from .models import ApiToken, Clinic, User


@admin.register(User)
class UserAdmin(BaseUserAdmin):  # type: ignore[type-arg]
    """Accounts, within one's clinics: a clinic admin sees the members of her clinics and
    the accounts of their patients, and cannot hand out powers she does not have."""

    list_display = ("username", "email", "role", "professional_id", "is_staff", "is_active")
    list_filter = ("role", "is_staff", "is_active", "clinics")
    fieldsets = (*(BaseUserAdmin.fieldsets or ()),
                 ("Portal", {"fields": ("role", "clinics", "professional_id")}))
    filter_horizontal = ("groups", "user_permissions", "clinics")

    def get_queryset(self, request: HttpRequest) -> QuerySet[User]:
        from imaging.admin_scope import admin_principal

        users = super().get_queryset(request)
        clinics = admin_principal(request).clinic_ids
        if clinics is None:
            return users
        inside = User.objects.filter(
            Q(clinics__in=sorted(clinics)) | Q(patient_records__clinic_id__in=sorted(clinics))
        ).values("pk")
        return users.filter(pk__in=inside, is_superuser=False)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = list(super().get_readonly_fields(request, obj))
        if not getattr(request.user, "is_superuser", False):
            fields += ["is_superuser", "user_permissions", "groups"]
        return fields

    def formfield_for_manytomany(self, db_field: Any, request: HttpRequest,
                                 **kwargs: Any) -> Any:
        from imaging.admin_scope import admin_principal

        clinics = admin_principal(request).clinic_ids
        if db_field.name == "clinics" and clinics is not None:
            kwargs["queryset"] = Clinic.objects.filter(pk__in=sorted(clinics))
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    actions = ["issue_enrolment_link"]

    @admin.action(description=_("Issue a second-factor enrolment link"))
    def issue_enrolment_link(self, request: HttpRequest, queryset: QuerySet[User]
                             ) -> TemplateResponse:
        """One-time links, on this response only (never stored, never in a message)."""
        issued, skipped = [], []
        for user in queryset.order_by("username"):
            if not user.is_active or TOTPDevice.objects.filter(user=user,
                                                              confirmed=True).exists():
                skipped.append(user.get_username())
            else:
                path = enrolment.issue(user, Actor.from_request(request))
                issued.append((user, request.build_absolute_uri(path)))
        response = TemplateResponse(request, "admin/accounts/enrolment_links.html", {
            **self.admin_site.each_context(request), "issued": issued, "skipped": skipped,
            "hours": settings.ENROLMENT_LINK_HOURS,
        })
        response["Cache-Control"] = "no-store"
        return response

    def delete_model(self, request: HttpRequest, obj: User) -> None:
        if actors.on_trail([obj.pk]):
            actors.deactivate(obj)
        else:
            super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        kept = actors.on_trail(queryset.values_list("pk", flat=True))
        for user in queryset.filter(pk__in=kept):
            actors.deactivate(user)
        if kept:
            self.message_user(request, ngettext(
                "%(count)d user is on the audit trail and was deactivated, not deleted.",
                "%(count)d users are on the audit trail and were deactivated, not deleted.",
                len(kept)) % {"count": len(kept)}, messages.WARNING)
        super().delete_queryset(request, queryset.exclude(pk__in=kept))

    def response_delete(self, request: HttpRequest, obj_display: str,
                        obj_id: int) -> HttpResponse:
        if not User.objects.filter(pk=obj_id).exists():
            deleted: HttpResponse = super().response_delete(request, obj_display, obj_id)
            return deleted
        self.message_user(request, _(
            "%(user)s is on the audit trail, so the account was deactivated, not deleted."
        ) % {"user": obj_display}, messages.WARNING)
        return HttpResponseRedirect(reverse("admin:accounts_user_changelist"))


admin.site.unregister(TOTPDevice)


@admin.register(TOTPDevice)
class TOTPDeviceAdmin(BaseTOTPDeviceAdmin):  # type: ignore[misc]  # django-otp is untyped
    """Admins see and delete devices, never their keys (OTP_ADMIN_HIDE_SENSITIVE_DATA), and
    cannot add one: a device whose key an admin chose would be a second factor the admin
    holds. People enrol their own phone through an enrolment link."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Admins see and revoke tokens; the secret exists only in the owner's one-time view."""

    list_display = ("name", "user", "prefix", "created", "last_used", "expires", "revoked")
    list_filter = ("revoked",)
    search_fields = ("name", "user__username", "prefix")
    readonly_fields = ("user", "prefix", "created", "last_used", "revoked")
    fields = ("user", "name", "prefix", "created", "last_used", "expires", "revoked")
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # issued on the portal page, where the secret can be shown once

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiToken]:
        tokens = super().get_queryset(request)
        users = admin.site.get_model_admin(User).get_queryset(request)
        return tokens.filter(user__in=users.values("pk"))

    @admin.action(description=_("Revoke selected tokens"))
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        from audit.trail import Actor

        from . import tokens

        actor = Actor.from_request(request)
        count = sum(tokens.revoke(token, actor=actor, why="revoked by an admin")
                    for token in queryset.filter(revoked__isnull=True))
        self.message_user(
            request,
            ngettext("%(count)d token revoked.", "%(count)d tokens revoked.", count)
            % {"count": count},
            messages.SUCCESS,
        )
