"""Download links and shares in the admin: listed, filtered, revoked. Tokens are never shown
(only their hashes are stored) and links are revoked, not deleted."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from audit.trail import Actor
from imaging.admin_scope import ClinicScopedAdmin

from . import services
from .models import DownloadLink, Share


class _RevocableAdmin(ClinicScopedAdmin):
    exclude = ("token_hash", "pin_hash")
    actions = ["revoke"]
    date_hierarchy = "created"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # links are made through the portal, which shows the token once

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoked, never deleted: the record of what was given stays

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in self.model._meta.fields if f.name not in self.exclude] + (
            ["studies"] if self.model is DownloadLink else [])

    @admin.action(description=_("Revoke the selected links now"))
    def revoke(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        actor = Actor.from_request(request)
        count = 0
        for obj in queryset.filter(revoked__isnull=True):
            revoke = services.revoke_link if isinstance(obj, DownloadLink) else \
                services.revoke_share
            count += bool(revoke(request.user, obj, actor))
        self.message_user(request, ngettext("%(count)d link revoked.",
                                            "%(count)d links revoked.", count)
                          % {"count": count}, messages.SUCCESS)


@admin.register(DownloadLink)
class DownloadLinkAdmin(_RevocableAdmin):
    patient_path = "studies__patient"
    list_display = ("pk", "created", "created_by", "expires", "uses", "max_uses", "revoked")
    list_filter = ("revoked", "expires")
    search_fields = ("created_by__username", "recipient_email",
                     "studies__study_instance_uid", "studies__patient__patient_id")


@admin.register(Share)
class ShareAdmin(_RevocableAdmin):
    patient_path = "study__patient"
    list_display = ("pk", "study", "recipient_email", "created_by", "expires",
                    "allow_download", "views", "revoked")
    list_filter = ("revoked", "allow_download", "expires")
    search_fields = ("recipient_email", "recipient_name", "created_by__username",
                     "study__study_instance_uid", "study__patient__patient_id")
