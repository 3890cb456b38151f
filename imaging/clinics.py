"""Which clinic a newly archived patient belongs to.

Everyone acts within their clinics (:mod:`imaging.policies`), so a patient with no clinic
is visible only to platform superusers until an admin assigns one. An installation with a
single clinic needs no such step: its new patients are that clinic's.
"""

from __future__ import annotations

from accounts.models import Clinic


def for_new_patient() -> int | None:
    """The clinic a new patient record gets: the installation's only clinic, if it has one
    clinic; otherwise none (listed in admin under "no clinic" for a superuser to assign)."""
    only = list(Clinic.objects.values_list("pk", flat=True)[:2])
    return only[0] if len(only) == 1 else None
