"""``manage.py verify_fixity``: re-hash stored DICOM files now and report any that changed.

The same check Celery beat runs (``imaging.tasks.verify_fixity``), but synchronous, for
cron jobs, operators and monitoring: the exit status is non-zero if any file failed.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from imaging import fixity


class Command(BaseCommand):
    help = ("Verify the SHA-256 of stored DICOM files (and, with a replica, of its objects); "
            "exit non-zero if any copy fails and is not repaired.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--due", action="store_true",
            help="only files not checked within FIXITY_MAX_AGE_DAYS (default: every file)",
        )
        parser.add_argument(
            "--older-than-hours", type=float, default=None,
            help="only files not checked within this many hours",
        )
        parser.add_argument(
            "--limit", type=int, default=None, help="check at most this many files"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        older_than: datetime.timedelta | None
        if options["older_than_hours"] is not None:
            older_than = datetime.timedelta(hours=options["older_than_hours"])
        elif options["due"]:
            older_than = None  # the configured maximum age
        else:
            older_than = datetime.timedelta(0)  # everything checked before now
        limit = options["limit"]
        report = fixity.verify_due(limit if limit is not None else 2**62, older_than=older_than)
        for failure in report.failures:
            self.stderr.write(
                f"FAILED instance {failure.instance_id} "
                f"(SOP Instance UID {failure.sop_instance_uid}, key {failure.blob_key}): "
                f"{failure.reason}"
                + (" (repaired from the other copy)" if failure.repaired else "")
            )
        for pk, error in report.unreadable:
            self.stderr.write(f"UNREADABLE instance {pk}: {error}")
        local = [f for f in report.failures if not f.replica]
        remote = len(report.failures) - len(local)
        repaired = len(report.failures) - len(report.unrepaired)
        self.stdout.write(
            f"{report.checked} files checked: {report.checked - len(local)} ok, "
            f"{len(local)} failed"
            + (f", {len(report.unreadable)} unreadable now" if report.unreadable else "")
            + (f", {report.skipped} skipped (checked meanwhile)" if report.skipped else "")
            + (f"; {report.replica_checked} replica objects checked: "
               f"{report.replica_checked - remote} ok, {remote} failed"
               if report.replica_checked else "")
            + (f"; {repaired} repaired from the other copy" if repaired else "")
        )
        if report.unrepaired:
            what = "copies" if settings.REPLICA_URL else "files"
            raise CommandError(f"{len(report.unrepaired)} stored {what} failed the fixity "
                               "check" + (" and could not be repaired" if settings.REPLICA_URL
                                          else ""))
        if report.unreadable:
            raise CommandError(f"{len(report.unreadable)} stored files could not be read")
