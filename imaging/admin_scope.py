"""Django admin within the clinics one belongs to.

Admin pages are one more read path, so they follow the policy's clinic scoping: a clinic
admin or a technician (who issues receipt codes from the patient list) sees the rows of
patients of their own clinics only, and picks patients and clinics only from those. A
platform superuser is the one exception. Rows of another clinic are absent, so their pages
answer 404, as everywhere else.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Model, Q, QuerySet
from django.http import HttpRequest

from accounts.models import Clinic

from .models import Patient
from .principals import Principal, as_principal


def admin_principal(request: HttpRequest) -> Principal:
    return as_principal(getattr(request, "user", None))


def patients_in_scope(principal: Principal) -> QuerySet[Patient]:
    """The patients whose rows an admin page may show: those of the principal's clinics."""
    clinics = principal.clinic_ids
    if clinics is None:
        return Patient.objects.all()
    return Patient.objects.filter(clinic_id__in=sorted(clinics))


class ClinicScopedAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Shows only rows of patients of the user's clinics (superusers: every clinic).

    ``patient_path`` is the lookup from the model to its patient ("" for Patient itself);
    ``clinic_path`` instead scopes rows that belong to a clinic directly.
    """

    patient_path: str = "patient"
    clinic_path: str = ""
    #: Rows that outlive their patient (tombstones): platform superusers only.
    superuser_only: bool = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        return self.scope(queryset, admin_principal(request))

    def scope(self, queryset: QuerySet[Any], principal: Principal) -> QuerySet[Any]:
        clinics = principal.clinic_ids
        if clinics is None:
            return queryset
        if self.superuser_only:
            return queryset.none()
        if self.clinic_path:
            return queryset.filter(**{f"{self.clinic_path}__in": sorted(clinics)})
        prefix = f"{self.patient_path}__" if self.patient_path else ""
        # As a subquery, so a path through a many-to-many (a link's studies) lists each
        # row once.
        inside = self.model._default_manager.filter(
            Q(**{f"{prefix}clinic_id__in": sorted(clinics)})).values("pk")
        return queryset.filter(pk__in=inside)

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest,
                                 **kwargs: Any) -> Any:
        principal = admin_principal(request)
        related: type[Model] = db_field.related_model
        if related is Patient:
            kwargs["queryset"] = patients_in_scope(principal)
        elif related is Clinic and principal.clinic_ids is not None:
            kwargs["queryset"] = Clinic.objects.filter(pk__in=sorted(principal.clinic_ids))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class ViewOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Rows written by the archive itself (ingest, replication, fixity, drills): admins
    look, they never add, edit or delete."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
