"""Integrity alerts: a copy found missing, changed or unreadable is logged at ERROR,
recorded as an :class:`~replica.models.IntegrityAlert`, repaired from the other copy if
that one is good, and the clinic's admins are e-mailed once per alert.

One open alert per instance and tier: the next check that finds the same damage updates
it and tries the repair again (the replica may have been unreachable), without another
e-mail. The notice on the admin index lists the open ones.
"""

from __future__ import annotations

import logging
import smtplib

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import translation

from accounts.models import Role, User
from imaging.models import Instance

from . import repair
from .keys import KeyRing
from .models import Copy, IntegrityAlert
from .readback import Problem

log = logging.getLogger(__name__)

_IN_WORDS = {IntegrityAlert.Kind.MISSING: "missing", IntegrityAlert.Kind.MISMATCH: "changed",
             IntegrityAlert.Kind.UNDECRYPTABLE: "not decryptable"}


def found(instance_id: int, tier: str, problem: Problem, ring: KeyRing | None = None,
          *, try_repair: bool = True, note: str = "") -> IntegrityAlert:
    """Raise the alert for one bad copy, then repair it from the other tier."""
    alert, new = _open(instance_id, tier, problem, note)
    log.error("integrity alert %s: the %s copy of instance %s is %s: %s",
              alert.pk, tier, instance_id, _IN_WORDS[problem.kind], problem.reason)
    if try_repair:
        try:
            ring = ring or KeyRing.from_settings()
        except ImproperlyConfigured as exc:
            _note(alert, f"not repaired: the replica keys cannot be read ({exc})")
            try_repair = False
    if try_repair and ring is not None:
        result = repair.repair(alert, ring)
        if result.other is not None:  # both bad: the other's alert, never repaired from this
            other = Copy.Tier.LOCAL if tier == Copy.Tier.REPLICA else Copy.Tier.REPLICA
            found(instance_id, other, result.other, try_repair=False,
                  note="not repaired: " + ("the local file" if tier == Copy.Tier.LOCAL
                                           else "the replica copy") + " is not good either")
        level = logging.INFO if result.repaired else logging.ERROR
        log.log(level, "integrity alert %s: %s", alert.pk, result.note)
    if new:
        notify(alert)
    return alert


def _note(alert: IntegrityAlert, note: str) -> None:
    alert.detail = f"{alert.detail}\n{note}"
    IntegrityAlert.objects.filter(pk=alert.pk).update(detail=alert.detail)
    log.error("integrity alert %s: %s", alert.pk, note)


def _open(instance_id: int, tier: str, problem: Problem, note: str
          ) -> tuple[IntegrityAlert, bool]:
    detail = f"{problem.reason}\n{note}".strip()
    for _attempt in range(2):  # a second check opening the same alert at the same moment
        with transaction.atomic():
            alert = (IntegrityAlert.objects.select_for_update()
                     .filter(instance_id=instance_id, tier=tier, repaired_at__isnull=True)
                     .first())
            if alert is not None:
                alert.kind, alert.detail = problem.kind, detail
                alert.save(update_fields=["kind", "detail"])
                return alert, False
            try:
                with transaction.atomic():
                    return IntegrityAlert.objects.create(
                        instance_id=instance_id, tier=tier, kind=problem.kind,
                        detail=detail), True
            except IntegrityError:
                continue
    raise RuntimeError(f"could not open an integrity alert for instance {instance_id}")


def recipients(instance_id: int) -> list[str]:
    """The admins of the instance's clinic; platform superusers when it has none (or no
    admin with an address)."""
    clinic_id = (Instance.all_objects.filter(pk=instance_id)
                 .values_list("series__study__patient__clinic_id", flat=True).first())
    people = User.objects.filter(is_active=True).exclude(email="")
    found = list(people.filter(role=Role.ADMIN, clinics=clinic_id)
                 .values_list("email", flat=True)) if clinic_id is not None else []
    if not found:
        found = list(people.filter(is_superuser=True).values_list("email", flat=True))
    return sorted(set(found))


def notify(alert: IntegrityAlert) -> None:
    """E-mail the alert; a failed send is logged, never lost with the alert (it stays in
    the admin)."""
    to = recipients(alert.instance_id)
    if not to:
        log.error("integrity alert %s: nobody to e-mail (no clinic admin or superuser "
                  "with an address)", alert.pk)
        return
    with translation.override(settings.LANGUAGE_CODE):
        subject = (translation.gettext("Integrity alert: a stored copy was repaired")
                   if alert.repaired_at else
                   translation.gettext("Integrity alert: a stored copy is damaged and was "
                                       "NOT repaired"))
        body = render_to_string("replica/integrity_alert_email.txt", {
            "alert": alert,
            "admin_path": reverse("admin:replica_integrityalert_change", args=[alert.pk]),
        })
    try:
        send_mail(subject, body, None, to)
    except (smtplib.SMTPException, OSError) as exc:
        log.error("integrity alert %s: the e-mail to %d admins failed: %s",
                  alert.pk, len(to), exc)
