"""``manage.py restore_database FILE --yes`` or ``--from-replica [latest|KEY] --yes``: bring
a lost database back from its dump, on disk or on the replica."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from replica import database_backup


class Command(BaseCommand):
    help = ("Replace the database's contents with a dump written by backup_database, from a "
            "file or from the replica. Rows written since the dump are lost: for a lost or "
            "broken database only.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("dump", type=Path, nargs="?")
        parser.add_argument(
            "--from-replica", nargs="?", const="latest", metavar="latest|KEY",
            help="download, decrypt and check a backup on the replica (default: the latest)")
        parser.add_argument("--yes", action="store_true",
                            help="confirm: the current contents are replaced")

    def handle(self, *args: Any, **options: Any) -> None:
        source: Path | None = options["dump"]
        from_replica: str | None = options["from_replica"]
        if (source is None) == (from_replica is None):
            raise CommandError("give a dump file or --from-replica, not both")
        if source is not None and not source.is_file():
            raise CommandError(f"no dump at {source}")
        if not options["yes"]:
            raise CommandError("restoring replaces the database's contents: add --yes")
        try:
            if from_replica is not None:
                key = database_backup.restore_from_replica(from_replica)
                self.stdout.write(f"database restored from replica backup {key}")
                return
            assert source is not None
            database_backup.restore(source)
        except database_backup.BackupFailed as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"database restored from {source}")
