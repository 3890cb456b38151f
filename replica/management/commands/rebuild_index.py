"""``manage.py rebuild_index``: the index rebuilt from the DICOM objects themselves, after
the database was lost and no backup could be restored (``replica.rebuild``)."""

from __future__ import annotations

import sys
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from tqdm import tqdm

from replica import rebuild, store
from replica.keys import KeyRing

NOT_RECOVERABLE = gettext_lazy(
    "Not recoverable from DICOM files: user accounts, access grants and shares, consents, "
    "report authorship and signatures, which clinic each patient belongs to (new patients "
    "get the installation's only clinic, if it has exactly one), where each object came "
    "from, and the audit trail before this rebuild. Restore them from a database backup if "
    "one exists. Patients purged before the database was lost come back if their files "
    "were not deleted yet: purge them again.")


class Command(BaseCommand):
    help = ("Rebuild patients, studies, series and instances from the stored DICOM objects "
            "(the local storage, or the encrypted replica).")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--from", dest="source", choices=[s.value for s in rebuild.Source],
                            default=rebuild.Source.LOCAL.value,
                            help="read the local dicom storage (default) or the replica")
        parser.add_argument("--dry-run", action="store_true",
                            help="read and check every object, write nothing")
        parser.add_argument("--no-progress", action="store_true",
                            help="do not draw a progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        source = rebuild.Source(options["source"])
        ring = None
        if source == rebuild.Source.REPLICA:
            if not store.configured():
                raise CommandError(_("no replica is configured (REPLICA_URL)"))
            try:
                ring = KeyRing.from_settings()
            except (ImproperlyConfigured, ValueError) as exc:
                raise CommandError(_("the replica keys cannot be loaded: %s") % exc) from exc
        progress_stream: Any = self.stderr._out
        with tqdm(unit="obj", desc=_("Rebuilding"), disable=options["no_progress"],
                  file=progress_stream) as bar:
            def tick(report: rebuild.RebuildReport) -> None:
                bar.update(1)
                bar.set_postfix(recovered=report.instances, unreadable=len(report.unreadable))

            try:
                report = rebuild.rebuild(source, dry_run=options["dry_run"], ring=ring,
                                         progress=tick)
            except store.StoreError as exc:
                raise CommandError(_("the replica cannot be read now (what was recovered "
                                     "so far is kept; run it again): %s") % exc) from exc
        self._report(report)
        if not report.complete:
            sys.exit(1)

    def _report(self, report: rebuild.RebuildReport) -> None:
        out = self.stdout.write
        if report.dry_run:
            out(_("Dry run: nothing was written. Would recover:"))
        else:
            out(_("Recovered from the %(source)s tier:") % {"source": report.source.value})
        out("  " + ngettext("%(n)d patient", "%(n)d patients", report.patients)
            % {"n": report.patients})
        out("  " + ngettext("%(n)d study", "%(n)d studies", report.studies)
            % {"n": report.studies})
        out("  " + ngettext("%(n)d series", "%(n)d series", report.series)
            % {"n": report.series})
        out("  " + ngettext("%(n)d instance (%(bytes)d bytes)",
                            "%(n)d instances (%(bytes)d bytes)", report.instances)
            % {"n": report.instances, "bytes": report.bytes})
        out(_("%(seen)d objects listed: %(known)d already indexed, %(duplicates)d copies of "
              "objects indexed under another key, %(purged)d of purged patients skipped, "
              "%(unreadable)d not recovered.")
            % {"seen": report.seen, "known": report.known, "duplicates": report.duplicates,
               "purged": report.purged, "unreadable": len(report.unreadable)})
        if report.unreadable:
            self.stderr.write(_("Not recovered (key: reason):"))
            for key, reason in report.unreadable:
                self.stderr.write(f"  {key}: {reason}")
        out(str(NOT_RECOVERABLE))
