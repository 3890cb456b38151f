"""``manage.py import_dicom PATH...``: bring folders, ZIPs and DICOMDIR media into the archive.

Every object goes through :func:`imaging.ingest.ingest`; the command only walks the input,
spreads the files over worker processes, shows progress and sums up what was stored, what
was already there and what was refused.
"""

from __future__ import annotations

import functools
import getpass
import multiprocessing
import os
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, connections
from tqdm import tqdm

from audit.trail import Actor
from imaging.ingest import IngestBatch, IngestResult, Outcome
from imaging.models import Instance, Patient, Series, Study
from imaging.sources import Candidate, Refused, expand, forget_open_archives
from imaging.store_audit import StoreAudit

# Objects indexed per database transaction (see imaging.ingest.IngestBatch).
INGEST_BATCH = 32


def ingest_candidates(candidates: list[Candidate], audit: StoreAudit | None = None,
                      ) -> list[IngestResult]:
    """Ingest one batch; ``audit``: its STORE entries, written with its index rows."""
    batch = IngestBatch(audit)
    for candidate in candidates:
        try:
            with candidate.open() as fp:
                batch.add(fp, source=f"import:{candidate.name}"[:128])
        except Refused as exc:  # too large, a zip bomb, outside the media: never stored
            batch.refuse(str(exc))
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            # One unreadable file or damaged ZIP member must not end the whole import.
            batch.refuse(f"cannot read: {exc}")
    return batch.commit()


# PostgreSQL's planner learns table sizes from ANALYZE, which autovacuum runs a minute or
# more after a bulk load; an import this large refreshes them itself, so searches right
# after it are planned for the archive as it now is.
ANALYZE_AFTER = 10_000


def refresh_planner_statistics() -> None:
    if connection.vendor != "postgresql":
        return  # SQLite plans these lookups from its indexes alone
    tables = [model._meta.db_table for model in (Patient, Study, Series, Instance)]
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE " + ", ".join(connection.ops.quote_name(t) for t in tables))


class Command(BaseCommand):
    help = "Import DICOM files, folders (recursively), ZIP archives and DICOMDIR media."
    requires_system_checks: list[str] = []  # seconds of start-up an import need not pay

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", type=Path)
        parser.add_argument(
            "--workers", type=int, default=os.cpu_count() or 1,
            help="worker processes (default: one per CPU)",
        )
        parser.add_argument(
            "--no-progress", action="store_true", help="do not draw a progress bar"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        paths: list[Path] = options["paths"]
        for path in paths:
            if not path.exists():
                raise CommandError(f"{path}: no such file or folder")
        try:
            candidates = list(expand(paths))
        except Exception as exc:
            raise CommandError(f"cannot read the input: {exc}") from exc
        total_bytes = sum(c.size for c in candidates)
        counts: Counter[Outcome] = Counter()
        problems: list[tuple[str, IngestResult]] = []

        # The trail gets one entry per study and batch (and per refusal), each written in
        # the transaction of the batch's index rows.
        audit = StoreAudit(Actor.system(f"import_dicom ({getpass.getuser()})"), "import")
        progress_stream: Any = self.stderr._out
        with tqdm(
            total=total_bytes, unit="B", unit_scale=True, desc="Importing",
            disable=options["no_progress"], file=progress_stream,
        ) as bar:
            for candidate, result in self._run(candidates, max(1, options["workers"]),
                                               audit):
                counts[result.outcome] += 1
                if not result.accepted:
                    problems.append((candidate.name, result))
                bar.update(candidate.size)
                bar.set_postfix(stored=counts[Outcome.STORED], refused=len(problems))
        if counts[Outcome.STORED] >= ANALYZE_AFTER:
            refresh_planner_statistics()

        for name, result in problems:
            self.stderr.write(f"{result.outcome.value}: {name}: {result.reason}")
        self.stdout.write(
            f"{len(candidates)} files: {counts[Outcome.STORED]} stored, "
            f"{counts[Outcome.DUPLICATE]} duplicate, {counts[Outcome.CONFLICT]} conflict, "
            f"{counts[Outcome.REJECTED]} rejected"
        )
        if candidates and not counts[Outcome.STORED] + counts[Outcome.DUPLICATE]:
            raise CommandError("nothing was imported")

    @staticmethod
    def _run(
        candidates: list[Candidate], workers: int, audit: StoreAudit,
    ) -> Iterator[tuple[Candidate, IngestResult]]:
        chunks = [candidates[i:i + INGEST_BATCH]
                  for i in range(0, len(candidates), INGEST_BATCH)]
        if workers == 1 or len(chunks) < 2:
            for chunk in chunks:
                yield from zip(chunk, ingest_candidates(chunk, audit), strict=True)
            return
        # Forked workers inherit the configured Django; each opens its own DB connection.
        connections.close_all()
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=forget_open_archives
        ) as pool:
            ingest_chunk = functools.partial(ingest_candidates, audit=audit)
            for chunk, results in zip(chunks, pool.map(ingest_chunk, chunks), strict=True):
                yield from zip(chunk, results, strict=True)
