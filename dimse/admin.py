"""DICOM peers in Django admin: who may associate, from where, and to do what."""

from django.contrib import admin

from .models import Peer


@admin.register(Peer)
class PeerAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = (
        "ae_title", "host", "port", "may_store", "may_query", "may_retrieve", "enabled",
        "clinic", "description",
    )
    list_filter = ("enabled", "may_store", "may_query", "may_retrieve", "clinic")
    list_editable = ("enabled",)
    search_fields = ("ae_title", "host", "description")
    readonly_fields = ("created", "updated")
