"""List patients whose retention has ended, for an admin to approve. Deletes nothing."""

from __future__ import annotations

import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from privacy import retention


class Command(BaseCommand):
    help = "List patients past retention (without an active legal hold) as purge requests."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--today", help="pretend today is this date (YYYY-MM-DD)")

    def handle(self, *args: Any, **options: Any) -> None:
        today = None
        if options["today"]:
            try:
                today = datetime.date.fromisoformat(options["today"])
            except ValueError as exc:
                raise CommandError(f"--today: {exc}") from exc
        created = retention.list_due(today)
        for request in created:
            self.stdout.write(
                f"listed {request.patient_ref}: last exam {request.last_exam}, "
                f"retention ended {request.retention_end}"
            )
        self.stdout.write(f"{len(created)} patient(s) newly listed for purge review")
