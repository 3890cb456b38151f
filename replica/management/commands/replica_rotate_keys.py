"""``manage.py replica_rotate_keys``: re-wrap every replica object's data key under
``REPLICA_CURRENT_KEY`` (payloads are not uploaded again), or, with ``--retire ID``, say
whether key ``ID`` may leave ``REPLICA_KEYS``.

Idempotent and resumable: each run takes what is not yet under the current key, so an
interrupted run is finished by running it again. Safe beside running workers.
"""

from __future__ import annotations

import getpass
from collections import Counter
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from audit.models import AuditAction, Outcome
from audit.trail import Actor, record
from replica import rotation
from replica.keys import KEY_ID, KeyRing
from replica.management.preflight import key_ring


class Command(BaseCommand):
    help = ("Re-wrap replica data keys under REPLICA_CURRENT_KEY without uploading payloads "
            "again; --retire ID checks that nothing refers to key ID any more.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch", type=int, default=500,
                            help="copies taken from the database at a time (default 500)")
        parser.add_argument("--retire", metavar="ID", default=None,
                            help="only check whether key ID can be removed from REPLICA_KEYS")
        parser.add_argument("--no-progress", action="store_true",
                            help="do not draw a progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        ring = key_ring("key rotation")
        if options["retire"] is not None:
            self._retire(options["retire"], ring)
            return
        if options["batch"] < 1:
            raise CommandError("--batch must be at least 1")
        self._rotate(ring, options["batch"], options["no_progress"])

    def _rotate(self, ring: KeyRing, batch: int, no_progress: bool) -> None:
        total = rotation.pending(ring).count()
        self.stdout.write(f"{total} copies to re-wrap under key {ring.current_id!r}")
        counts: Counter[rotation.Outcome] = Counter()
        problems: list[rotation.Rotation] = []
        progress_stream: Any = self.stderr._out
        with tqdm(total=total, unit="copy", desc="Re-wrapping", file=progress_stream,
                  disable=no_progress or not total) as bar:
            for ids in rotation.batches(ring, batch):
                for pk in ids:
                    result = rotation.rotate_copy(pk, ring)
                    counts[result.outcome] += 1
                    if result.outcome in (rotation.Outcome.FAILED, rotation.Outcome.MISSING):
                        problems.append(result)
                    bar.update(1)
                if no_progress:
                    self.stdout.write(f"  {sum(counts.values())}/{total} done")
        for problem in problems:
            self.stderr.write(f"copy {problem.copy_id}: {problem.outcome.value}: "
                              f"{problem.error}")
        summary = {outcome.value: counts[outcome] for outcome in rotation.Outcome}
        record(AuditAction.KEY_ROTATION, Actor.system(f"replica_rotate_keys ({getpass.getuser()})"),
               outcome=Outcome.FAILED if problems else Outcome.ALLOWED,
               detail={"current_key": ring.current_id, **summary})
        self.stdout.write(", ".join(f"{n} {name}" for name, n in summary.items()))
        if problems:
            raise CommandError(f"{len(problems)} copies were not re-wrapped; run again once "
                               "they are repaired (manage.py verify_fixity)")
        left = rotation.pending(ring).count()
        self.stdout.write(f"Every replica copy is under key {ring.current_id!r}." if not left
                          else f"{left} copies were written meanwhile; run again.")

    def _retire(self, key_id: str, ring: KeyRing) -> None:
        if not KEY_ID.fullmatch(key_id):
            raise CommandError("a key id is 1 to 64 of A-Z a-z 0-9 . _ -")
        if key_id == ring.current_id:
            raise CommandError(f"key {key_id!r} is REPLICA_CURRENT_KEY: make another key "
                               "current and rotate first")
        self.stdout.write(f"Looking for copies and objects under key {key_id!r}...")
        using = rotation.still_using(key_id)
        if using.rows or using.objects_count:
            shown = "".join(f"\n  {key}" for key in using.objects)
            raise CommandError(
                f"key {key_id!r} is still in use: {using.rows} copy rows and "
                f"{using.objects_count} objects' metadata refer to it{shown}\nRun "
                "manage.py replica_rotate_keys first; removing the key now would make them "
                "unreadable")
        self.stdout.write(
            f"Nothing refers to key {key_id!r} any more: it can be removed from REPLICA_KEYS. "
            "Keep its offline copy until the next backups no longer need it.")
