"""``manage.py reconcile``: the index compared with the local storage and the replica;
missing, damaged and orphaned objects listed, and repaired when asked
(``replica.reconcile``). Exit status 0: clean (or everything found repaired); 1: problems
remain."""

from __future__ import annotations

import sys
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _

from replica import reconcile, store

BOTH = "both"


class Command(BaseCommand):
    help = ("Compare the index with the local storage and the replica: list objects missing "
            "from a tier and orphans no row refers to; optionally verify, repair, quarantine.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tier", choices=[*(t.value for t in reconcile.Tier), BOTH],
                            help="which tier to check (default: both with a replica, else "
                                 "local)")
        parser.add_argument("--verify", action="store_true",
                            help="re-hash every object that is there (the replica's after "
                                 "decrypting it)")
        parser.add_argument("--repair", action="store_true",
                            help="restore missing or damaged local objects from a verified "
                                 "replica copy; queue missing or damaged replica objects for "
                                 "replication again; delete the temporary files unfinished "
                                 "recalls and repairs left")
        parser.add_argument("--quarantine", action="store_true",
                            help="move orphans under RECONCILE_QUARANTINE_PREFIX (never "
                                 "deleted)")
        parser.add_argument("--min-age", type=float, default=None, metavar="SECONDS",
                            help="objects younger than this are not orphans (default: "
                                 "RECONCILE_MIN_AGE_SECONDS)")

    def handle(self, *args: Any, **options: Any) -> None:
        choice = options["tier"] or (BOTH if store.configured() else reconcile.Tier.LOCAL)
        tiers = list(reconcile.Tier) if choice == BOTH else [reconcile.Tier(choice)]
        if reconcile.Tier.REPLICA in tiers and not store.configured():
            raise CommandError(_("no replica is configured (REPLICA_URL)"))
        min_age = options["min_age"]
        if min_age is not None and min_age < 0:
            raise CommandError(_("--min-age must be 0 or more seconds"))
        opts = reconcile.Options(
            verify=options["verify"], repair=options["repair"],
            quarantine=options["quarantine"],
            min_age=float(settings.RECONCILE_MIN_AGE_SECONDS if min_age is None else min_age))
        try:
            report = reconcile.reconcile(tiers, opts)
        except (ImproperlyConfigured, ValueError) as exc:
            raise CommandError(_("reconciliation refused: %s") % exc) from exc
        except store.StoreError as exc:
            raise CommandError(_("the replica cannot be read now: %s") % exc) from exc
        self._report(report)
        if not report.clean:
            sys.exit(1)

    def _report(self, report: reconcile.ReconcileReport) -> None:
        for tier, count in report.checked.items():
            self.stdout.write(_("%(tier)s: %(count)d objects listed, %(verified)d verified")
                              % {"tier": tier.value, "count": count,
                                 "verified": report.verified.get(tier, 0)})
        if report.young:
            self.stdout.write(_("%(n)d unreferenced objects younger than --min-age left "
                                "alone") % {"n": report.young})
        if report.erasing:
            self.stdout.write(_("%(n)d files of purged patients awaiting deletion left to "
                                "the purge") % {"n": report.erasing})
        for p in report.problems:
            line = f"{p.tier.value} {p.kind.value}: {p.key}: {p.reason}"
            if p.solved:
                self.stdout.write(f"{line} -> {p.repaired}")
            else:
                self.stderr.write(line)
        left = sum(not p.solved for p in report.problems)
        if report.clean:
            self.stdout.write(_("Clean: %(found)d problems found, all repaired.")
                              % {"found": len(report.problems)} if report.problems
                              else _("Clean: every object is where the index says."))
        else:
            self.stdout.write(_("%(left)d of %(found)d problems remain.")
                              % {"left": left, "found": len(report.problems)})
