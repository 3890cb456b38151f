"""``manage.py restore --from-replica [--clinic ID] [--study UID]``: rebuild a lost local
tier from the replica.

Every instance whose local object is missing (lost, or evicted) is recalled from its
verified replica copy by the code a read recalls with (``replica.recall``): decrypted,
hashed and kept only if it is the instance's bytes. Objects already there are skipped, so
running it again does nothing more. Instances with no verified replica copy are listed as
unrecoverable and the command exits with status 1.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from imaging import blobs
from imaging.models import Instance
from replica import recall
from replica.management.preflight import key_ring


class Command(BaseCommand):
    help = "Recall every instance whose local object is missing from its verified replica copy."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--from-replica", action="store_true", required=True,
                            help="restore from the replica (the only source there is)")
        parser.add_argument("--clinic", type=int, help="only this clinic's patients (id)")
        parser.add_argument("--study", help="only this study (Study Instance UID)")
        parser.add_argument("--no-progress", action="store_true",
                            help="do not draw a progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        ring = key_ring("restore")
        instances = Instance.all_objects.order_by("pk")
        if options["clinic"] is not None:
            instances = instances.filter(series__study__patient__clinic_id=options["clinic"])
        if options["study"]:
            instances = instances.filter(series__study__study_instance_uid=options["study"])
        rows = list(instances.values_list("pk", "blob_key", "size_bytes"))
        counts: Counter[recall.Outcome] = Counter()
        problems: list[tuple[recall.Outcome, int, str]] = []
        local = blobs.storage()
        progress_stream: Any = self.stderr._out
        with tqdm(total=sum(r[2] for r in rows), unit="B", unit_scale=True, desc="Restoring",
                  disable=options["no_progress"] or not rows, file=progress_stream) as bar:
            missing = []
            for pk, key, size in rows:
                if local.exists(key):
                    counts[recall.Outcome.PRESENT] += 1
                    bar.update(size)
                else:
                    missing.append(pk)
            by_pk = {pk: (key, size) for pk, key, size in rows}
            for pk, outcome in recall.recall_many(missing, ring):
                key, size = by_pk[pk]
                counts[outcome] += 1
                if outcome in (recall.Outcome.UNRECOVERABLE, recall.Outcome.FAILED):
                    problems.append((outcome, pk, key))
                bar.update(size)
                bar.set_postfix(recalled=counts[recall.Outcome.RECALLED], lost=len(problems))
        problems.sort(key=lambda problem: problem[1])
        for outcome, pk, key in problems:
            reason = ("no verified replica copy" if outcome == recall.Outcome.UNRECOVERABLE
                      else "the replica copy could not be read back as its bytes")
            self.stderr.write(f"unrecoverable: instance {pk} ({key}): {reason}")
        self.stdout.write(
            f"{len(rows)} instances: {counts[recall.Outcome.RECALLED]} recalled, "
            f"{counts[recall.Outcome.PRESENT]} already local, "
            f"{counts[recall.Outcome.UNRECOVERABLE] + counts[recall.Outcome.FAILED]} "
            f"unrecoverable")
        if problems:
            raise CommandError(f"{len(problems)} instances could not be restored",
                               returncode=1)
