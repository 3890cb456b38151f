"""``manage.py evict_local [--dry-run]``: one eviction run here and now, as the periodic
task would (``replica.evict``): by each clinic's age limit, then by free space."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from replica import evict, store


class Command(BaseCommand):
    help = ("Delete local files whose replica copy is verified: those past their clinic's "
            "evict_local_after_days, then the oldest while free space is below "
            "LOCAL_TIER_MIN_FREE_PERCENT.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true",
                            help="list what would be evicted; delete nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        if not store.configured():
            raise CommandError("no replica is configured (REPLICA_URL): nothing may be evicted")
        dry = options["dry_run"]
        report = evict.evict_local(dry_run=dry)
        if report.skipped:
            raise CommandError("another eviction run is going (a worker's periodic task or "
                               "another evict_local): nothing done; try again when it ends")
        if dry:
            for key in report.keys:
                self.stdout.write(key)
        verb = "would evict" if dry else "evicted"
        shortfall = ("watermark off" if report.shortfall is None
                     else f"{report.shortfall} bytes short of the watermark")
        self.stdout.write(f"{verb} {report.count} objects ({report.bytes_freed} bytes): "
                          f"{report.by_age} by age, {report.by_watermark} by free space; "
                          f"{shortfall}")
