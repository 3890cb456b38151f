"""``manage.py verify_audit``: check the audit trail's hash chain end to end."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from audit.models import AuditEvent, ReadSession
from audit.trail import first_broken_link


class Command(BaseCommand):
    help = "Verify the audit trail's hash chain and report the first broken link."

    def handle(self, *args: Any, **options: Any) -> None:
        broken = first_broken_link()
        if broken is not None:
            raise CommandError(f"audit trail broken at entry {broken.seq}: {broken.problem}")
        self.stdout.write(f"audit trail intact: {AuditEvent.objects.count()} entries")
        still_open = ReadSession.objects.filter(closed_seq=None).count()
        if still_open:
            self.stdout.write(f"{still_open} viewing sessions open: their counts are chained "
                              "when they close (manage.py close_read_sessions)")
