"""``manage.py backup_database --to FILE | --to-replica``: a consistent dump of the portal's
database, to a file or, encrypted, to the replica."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.models import AuditAction
from audit.trail import Actor, record
from replica import database_backup


class Command(BaseCommand):
    help = ("Write a consistent dump of the database (pg_dump, or SQLite's backup API) to a "
            "file, or encrypted to the replica (keeping DATABASE_BACKUP_KEEP of them).")

    def add_arguments(self, parser: CommandParser) -> None:
        where = parser.add_mutually_exclusive_group(required=True)
        where.add_argument("--to", type=Path, help="the dump file to write")
        where.add_argument("--to-replica", action="store_true",
                           help="encrypt the dump to the replica, read it back and check it")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["to_replica"]:
            try:
                backup = database_backup.to_replica()
            except database_backup.BackupFailed as exc:
                raise CommandError(str(exc)) from exc
            database_backup.record_replica_backup(backup, "backup_database")
            self.stdout.write(f"{backup.engine} database dumped, encrypted, to the replica as "
                              f"{backup.key} ({backup.size} bytes, verified)")
            return
        target: Path = options["to"]
        if target.exists():
            raise CommandError(f"{target} exists: give a new file name")
        try:
            done = database_backup.dump(target)
        except database_backup.BackupFailed as exc:
            target.unlink(missing_ok=True)
            raise CommandError(str(exc)) from exc
        record(AuditAction.EXPORT, Actor.system("backup_database"),
               detail={"database_backup": {"engine": done.engine, "bytes": done.size}})
        self.stdout.write(f"{done.engine} database dumped to {target} ({done.size} bytes)")
