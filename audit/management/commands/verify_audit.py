"""``manage.py verify_audit``: check the audit trail's hash chain end to end.

``--resign-from-env OLD_KEY_VARIABLE`` changes the chain key: the trail is verified with the
old key (read from that environment variable), then the head and checkpoints are signed
again with the configured ``AUDIT_CHAIN_KEY``.
"""

import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.models import AuditEvent, ReadSession
from audit.trail import first_broken_link, sign_with_current_key


class Command(BaseCommand):
    help = "Verify the audit trail's hash chain and report the first broken link."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--resign-from-env", metavar="VARIABLE", default="",
            help="verify with the old key in this environment variable, then sign the "
                 "chain again with the configured AUDIT_CHAIN_KEY")

    def handle(self, *args: Any, **options: Any) -> None:
        variable = options["resign_from_env"]
        old_key = os.environ.get(variable, "") if variable else ""
        if variable and not old_key:
            raise CommandError(f"{variable} is not set: give the old chain key there")
        broken = first_broken_link(old_key.encode() if old_key else None)
        if broken is not None:
            raise CommandError(f"audit trail broken at entry {broken.seq}: {broken.problem}")
        if old_key:
            sign_with_current_key()
            self.stdout.write("audit trail signed again with the configured AUDIT_CHAIN_KEY")
        self.stdout.write(f"audit trail intact: {AuditEvent.objects.count()} entries")
        still_open = ReadSession.objects.filter(closed_seq=None).count()
        if still_open:
            self.stdout.write(f"{still_open} viewing sessions open: their counts are chained "
                              "when they close (manage.py close_read_sessions)")
