"""Who may do what in the archive. Pure decisions; every entry point asks here.

Interim rules until care relationships and grants exist (issue 2): admins and doctors see
the archive, patients see the studies of the patient records linked to their account,
technicians bring images in but do not browse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db.models import QuerySet

from accounts.models import Role

from .models import Study

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser

    from accounts.models import User


def may_ingest(user: User | AnonymousUser) -> bool:
    if not user.is_authenticated or not user.is_active:
        return False
    return bool(user.is_superuser or getattr(user, "role", None) in (Role.ADMIN, Role.TECHNICIAN))


def visible_studies(user: User | AnonymousUser) -> QuerySet[Study]:
    """The studies ``user`` may see; outsiders get an empty set, never an error."""
    studies = Study.objects.select_related("patient")
    if not user.is_authenticated or not user.is_active:
        return studies.none()
    role = getattr(user, "role", None)
    if user.is_superuser or role in (Role.ADMIN, Role.DOCTOR):
        return studies
    if role == Role.PATIENT:
        return studies.filter(patient__user=user)
    return studies.none()
