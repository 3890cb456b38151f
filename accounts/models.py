"""Portal users and their roles."""

from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils.translation import gettext_lazy as _


class Role(models.TextChoices):
    ADMIN = "admin", _("Clinic admin")
    DOCTOR = "doctor", _("Doctor")
    TECHNICIAN = "technician", _("Technician")
    PATIENT = "patient", _("Patient")


class User(AbstractUser):
    role = models.CharField(
        _("role"), max_length=16, choices=Role.choices, default=Role.PATIENT
    )

    @property
    def may_ingest(self) -> bool:
        """Technicians and admins bring images in; see imaging.policies."""
        return self.is_superuser or self.role in (Role.ADMIN, Role.TECHNICIAN)
