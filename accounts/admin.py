from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django_otp.plugins.otp_totp.admin import TOTPDeviceAdmin as BaseTOTPDeviceAdmin
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit.trail import Actor

from . import enrolment
from .models import ApiToken, User


@admin.register(User)
class UserAdmin(BaseUserAdmin):  # type: ignore[type-arg]
    list_display = ("username", "email", "role", "is_staff", "is_active")
    list_filter = ("role", "is_staff", "is_active")
    fieldsets = (*(BaseUserAdmin.fieldsets or ()), ("Portal", {"fields": ("role",)}))
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

    @admin.action(description=_("Revoke selected tokens"))
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        count = queryset.filter(revoked__isnull=True).update(revoked=timezone.now())
        self.message_user(
            request,
            ngettext("%(count)d token revoked.", "%(count)d tokens revoked.", count)
            % {"count": count},
            messages.SUCCESS,
        )
