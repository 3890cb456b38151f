"""``manage.py restore_drill [--sample N] [--bytes LIMIT]``: bring a random sample of studies
back from the replica now and check every byte (``replica.drill``), as the weekly beat task
does; the report is in admin either way."""

from __future__ import annotations

import re
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from replica import drill

UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def byte_size(text: str) -> int:
    """``500000``, ``800M``, ``2G`` (binary units); refuses anything else."""
    found = re.fullmatch(r"\s*(\d+)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", text)
    if not found or int(found[1]) < 1:
        raise ValueError(f"{text!r} is not a size in bytes (e.g. 500000, 800M, 2G)")
    return int(found[1]) * UNITS[found[2].lower()]


class Command(BaseCommand):
    help = ("Download a random sample of studies from the replica, decrypt them and check "
            "them against their SHA-256; records a drill report.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--sample", type=int, default=None, metavar="N",
                            help="studies to check (default RESTORE_DRILL_SAMPLE)")
        parser.add_argument("--bytes", default=None, metavar="LIMIT",
                            help="at most this much data, e.g. 800M or 2G "
                                 "(default RESTORE_DRILL_MAX_BYTES)")

    def handle(self, *args: Any, **options: Any) -> None:
        sample: int | None = options["sample"]
        if sample is not None and sample < 1:
            raise CommandError("--sample is a number of studies, 1 or more")
        limit = None
        if options["bytes"] is not None:
            try:
                limit = byte_size(options["bytes"])
            except ValueError as exc:
                raise CommandError(f"--bytes: {exc}") from exc
        try:
            report = drill.run(sample, limit)
        except drill.DrillRefused as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"restore drill {report.pk}: {report.studies} studies, {report.objects_checked} "
            f"objects, {report.bytes_checked} bytes in {report.seconds:.1f} s, "
            f"{report.failure_count} failed")
        for failure in report.failures:
            self.stderr.write(f"instance {failure['instance']} ({failure['key']}): "
                              f"{failure['reason']}")
        if not report.ok:
            raise CommandError(f"the restore drill failed: {report.failure_count} failures")
