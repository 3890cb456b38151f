"""``manage.py replicate``: bring an existing archive onto the replica, in this process.

Instances stored before a replica was configured have no copy rows; this gives them some
and replicates them, with a progress bar. ``--all-pending`` also takes the whole backlog
(every copy not yet verified that no worker holds), as the periodic drain would, but here
and now. Safe beside running workers: each copy is claimed before it is uploaded.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from replica import copies, replicate
from replica.management.preflight import key_ring
from replica.models import Copy


class Command(BaseCommand):
    help = ("Replicate instances that have no replica copy yet (and, with --all-pending, "
            "the backlog).")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--all-pending", action="store_true",
            help="also every pending or failed copy whose lease or retry wait has passed")
        parser.add_argument(
            "--no-progress", action="store_true", help="do not draw a progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        ring = key_ring("replication")
        ids = copies.enrol_existing()
        if options["all_pending"]:
            ids = sorted(set(ids) | set(copies.backlog()))
        sizes = dict(Copy.objects.filter(pk__in=ids).values_list("pk", "instance__size_bytes"))
        counts: Counter[replicate.Outcome] = Counter()
        failures: list[tuple[int, str]] = []
        progress_stream: Any = self.stderr._out
        with tqdm(total=sum(sizes.values()), unit="B", unit_scale=True, desc="Replicating",
                  disable=options["no_progress"] or not ids, file=progress_stream) as bar:
            for pk in ids:
                attempt = replicate.replicate_copy(pk, ring)
                counts[attempt.outcome] += 1
                if attempt.outcome == replicate.Outcome.FAILED:
                    failures.append((pk, attempt.error))
                bar.update(sizes.get(pk, 0))
                bar.set_postfix(verified=counts[replicate.Outcome.VERIFIED],
                                failed=len(failures))
        for pk, error in failures:
            self.stderr.write(f"copy {pk}: {error}")
        self.stdout.write(
            f"{len(ids)} copies: {counts[replicate.Outcome.VERIFIED]} verified, "
            f"{counts[replicate.Outcome.FAILED]} failed, "
            f"{counts[replicate.Outcome.BUSY]} held by a worker, "
            f"{counts[replicate.Outcome.ALREADY]} already verified")
        if failures:
            raise CommandError(f"{len(failures)} copies failed; they stay in the backlog")
