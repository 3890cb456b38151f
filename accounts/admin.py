from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from audit import actors, auth_events
from audit.trail import Actor

from .models import ApiToken, User


@admin.register(User)
class UserAdmin(BaseUserAdmin):  # type: ignore[type-arg]
    list_display = ("username", "email", "role", "is_staff", "is_active")
    list_filter = ("role", "is_staff", "is_active")
    fieldsets = (*(BaseUserAdmin.fieldsets or ()), ("Portal", {"fields": ("role",)}))

    # Users on the audit trail are deactivated instead of deleted (audit.actors).
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
            return super().response_delete(request, obj_display, obj_id)
        self.message_user(request, _(
            "%(user)s is on the audit trail, so the account was deactivated, not deleted."
        ) % {"user": obj_display}, messages.WARNING)
        return HttpResponseRedirect(reverse("admin:accounts_user_changelist"))


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
        revoking = list(queryset.filter(revoked__isnull=True).select_related("user"))
        count = queryset.filter(pk__in=[t.pk for t in revoking]).update(revoked=timezone.now())
        for token in revoking:
            auth_events.token_changed(Actor.from_request(request), token, "revoked")
        self.message_user(
            request,
            ngettext("%(count)d token revoked.", "%(count)d tokens revoked.", count)
            % {"count": count},
            messages.SUCCESS,
        )
