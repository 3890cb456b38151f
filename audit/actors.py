"""Users who are on the audit trail are deactivated, never deleted.

An entry keeps its actor as text (username) and id (``user_pk``); the user row is what
says who that id was, with name, role and history in django-auditlog. Deleting it would
leave entries that point at no one, so deleting such a user is refused here, below every
way in (admin, ORM, shell), and the admin deactivates instead (accounts.admin).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .models import AuditEvent


class UserOnTrail(PermissionError):
    """Raised when a user with audit entries is about to be deleted."""


def on_trail(user_pks: Iterable[int]) -> set[int]:
    """The ids among ``user_pks`` that some audit entry names as its actor."""
    found = (AuditEvent.objects.filter(user_pk__in=list(user_pks))
             .values_list("user_pk", flat=True).distinct())
    return {pk for pk in found if pk is not None}


def deactivate(user: Any) -> None:
    """Sign the user out of the portal for good, keeping who they were (through save, so
    django-auditlog records the change)."""
    if user.is_active:
        user.is_active = False
        user.save(update_fields=["is_active"])


def refuse_deleting_users_on_the_trail(sender: Any, instance: Any, **kwargs: Any) -> None:
    """pre_delete receiver for the user model; the whole delete is rolled back."""
    if on_trail([instance.pk]):
        raise UserOnTrail(
            f"user {instance.get_username()!r} is on the audit trail: deactivate, do not "
            "delete"
        )
