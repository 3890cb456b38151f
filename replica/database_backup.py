"""The database's own backup: a consistent dump to a file, and its restore.

PostgreSQL with its own tools (``pg_dump`` in custom format, ``pg_restore``), run as
separate processes so a large database streams to disk and never through this process's
memory; SQLite with its online backup API, which copies a live database page by page
without blocking writers for long. What the dump holds is everything the DICOM files
cannot give back: users, grants, consents, shares, reports' rows and the audit trail.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from . import store
from .crypto import DecryptingReader, EncryptingReader, Envelope, InvalidObject, new_envelope
from .keys import KeyRing

log = logging.getLogger(__name__)


class BackupFailed(RuntimeError):
    """The dump or the restore did not complete; the message says why."""


@dataclass(frozen=True)
class Dump:
    path: Path
    engine: str  # "postgresql" or "sqlite"
    size: int


def _settings(alias: str) -> dict[str, Any]:
    return connections[alias].settings_dict


def engine(alias: str = "default") -> str:
    vendor = connections[alias].vendor
    if vendor not in ("postgresql", "sqlite"):
        raise BackupFailed(f"no backup for the {vendor} database engine")
    return vendor


def _pg_environment(db: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """Connection arguments for the PostgreSQL tools; the password goes by environment,
    never on a command line that ``ps`` shows."""
    args = []
    if db.get("HOST"):
        args += ["--host", str(db["HOST"])]
    if db.get("PORT"):
        args += ["--port", str(db["PORT"])]
    if db.get("USER"):
        args += ["--username", str(db["USER"])]
    env = {**os.environ}
    if db.get("PASSWORD"):
        env["PGPASSWORD"] = str(db["PASSWORD"])
    return args, env


def _run(command: list[str], env: dict[str, str] | None = None) -> None:
    tool = shutil.which(command[0])
    if tool is None:
        raise BackupFailed(f"{command[0]} is not installed (Debian: postgresql-client)")
    result = subprocess.run([tool, *command[1:]], env=env, capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise BackupFailed(f"{command[0]} failed: {result.stderr.strip()[-2000:]}")


def dump(destination: Path, alias: str = "default") -> Dump:
    """Write a consistent dump of the database to ``destination`` (a new file)."""
    kind = engine(alias)
    db = _settings(alias)
    if kind == "postgresql":
        args, env = _pg_environment(db)
        _run(["pg_dump", "--format=custom", "--no-owner", "--no-privileges", *args,
              "--file", str(destination), str(db["NAME"])], env)
    else:
        connection = connections[alias]
        connection.ensure_connection()
        with sqlite3.connect(destination) as target:
            connection.connection.backup(target, pages=1024)
        target.close()
    return Dump(destination, kind, destination.stat().st_size)


def restore(source: Path, alias: str = "default") -> None:
    """Replace the database's contents with the dump at ``source``.

    Every row the dump does not hold is gone afterwards: this is for a lost or broken
    database, and the caller asks before calling it.
    """
    kind = engine(alias)
    db = _settings(alias)
    connections[alias].close()
    if kind == "postgresql":
        args, env = _pg_environment(db)
        _run(["pg_restore", "--clean", "--if-exists", "--no-owner", "--no-privileges",
              "--single-transaction", "--exit-on-error", *args, "--dbname", str(db["NAME"]),
              str(source)], env)
        return
    with sqlite3.connect(source) as dumped, sqlite3.connect(str(db["NAME"])) as live:
        dumped.backup(live, pages=1024)
    dumped.close()
    live.close()


# --- To the replica: the same dump, encrypted, beside the objects it indexes ---------------
#: Below REPLICA_PREFIX; backups are named by time, so they sort oldest first.
REPLICA_FOLDER = "db/"
META_SHA256 = "backup-sha256"
META_SIZE = "backup-size"
META_ENGINE = "backup-engine"
#: The names ``to_replica`` gives: nothing else in the folder is ever pruned.
BACKUP_NAME = re.compile(r"\d{8}T\d{12}Z-[0-9a-f]{16}")


@dataclass(frozen=True)
class ReplicaBackup:
    key: str
    engine: str
    size: int  # of the dump (plaintext)
    sha256: str
    path: Path | None = None  # the decrypted dump, while ``fetched`` holds it


def replica_prefix() -> str:
    """Where database backups live in the replica bucket (replica listings skip it)."""
    return store.object_key(REPLICA_FOLDER)


def to_replica(ring: KeyRing | None = None, alias: str = "default") -> ReplicaBackup:
    """Dump the database to a temporary file, stream it through the replica's encryption
    (a fresh data key wrapped by the current key, the envelope in the object's metadata)
    to a new key, read it back and compare its hash, then keep the ``DATABASE_BACKUP_KEEP``
    most recent backups.

    The plaintext's SHA-256 and size travel in the metadata too: a restore has no database
    to look them up in. They say nothing about the contents; the dump itself never leaves
    this machine unencrypted.
    """
    if not store.configured():
        raise BackupFailed("no replica is configured (REPLICA_URL)")
    ring = ring or _ring()
    with tempfile.TemporaryDirectory(prefix="database-backup-") as scratch:
        done = dump(Path(scratch) / "portal.dump", alias)
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        key = f"{replica_prefix()}{stamp}-{secrets.token_hex(8)}"
        envelope, dek = new_envelope(ring)
        with done.path.open("rb") as fp:
            reader = EncryptingReader(cast(BinaryIO, fp), dek, envelope)
            # The metadata must be known before the upload starts: hash the dump first.
            digest = _sha256(done.path)
            meta = {**envelope.to_metadata(), META_SHA256: digest,
                    META_SIZE: str(done.size), META_ENGINE: done.engine}
            store.put(key, cast(IO[bytes], reader), meta)
        if reader.plaintext_sha256 != digest:
            store.delete(key)
            raise BackupFailed("the dump changed while it was uploaded")
    backup = ReplicaBackup(key, done.engine, done.size, digest)
    try:
        with fetched(key, ring):  # read back: only a backup that decrypts counts
            pass
    except BackupFailed:
        _delete_quietly(key)
        raise
    prune(settings.DATABASE_BACKUP_KEEP)
    return backup


def _ring() -> KeyRing:
    try:
        return KeyRing.from_settings()
    except ImproperlyConfigured as exc:
        raise BackupFailed(f"the replica keys cannot be read: {exc}") from exc


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fp:
        while chunk := fp.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _delete_quietly(key: str) -> None:
    try:
        store.delete(key)
    except store.StoreError as exc:
        log.warning("could not delete database backup %s: %s", key, exc)


def replica_backups() -> list[str]:
    """Keys of the database backups on the replica, oldest first."""
    prefix = replica_prefix()
    return sorted(key for key in store.keys(REPLICA_FOLDER)
                  if key.startswith(prefix) and BACKUP_NAME.fullmatch(key[len(prefix):]))


def prune(keep: int) -> list[str]:
    """Delete all but the ``keep`` most recent backups; returns the keys deleted."""
    if keep < 1:
        raise ValueError("keep at least one database backup")
    old = replica_backups()[:-keep]
    for key in old:
        store.delete(key)
    return old


def latest_backup() -> str:
    found = replica_backups()
    if not found:
        raise BackupFailed("there is no database backup on the replica")
    return found[-1]


@contextlib.contextmanager
def fetched(key: str, ring: KeyRing | None = None) -> Iterator[ReplicaBackup]:
    """Download and decrypt the replica backup ``key`` into a temporary file and check it
    against the hash and size in its metadata; the file is removed when the block ends.
    Nothing that fails authentication or the hash is ever handed over."""
    ring = ring or _ring()
    key = _full_key(key)
    with tempfile.TemporaryDirectory(prefix="database-restore-") as scratch:
        path = Path(scratch) / "portal.dump"
        try:
            found = store.client().get_object(Bucket=store.bucket(), Key=key)
        except store.StoreError as exc:
            raise BackupFailed(f"could not download database backup {key}: {exc}") from exc
        body = found["Body"]
        meta = {name.lower(): value for name, value in found.get("Metadata", {}).items()}
        digest = hashlib.sha256()
        size = 0
        try:
            reader = DecryptingReader(cast(BinaryIO, body), ring, Envelope.from_metadata(meta))
            with path.open("wb") as out:
                while chunk := reader.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
        except (InvalidObject, KeyError) as exc:
            raise BackupFailed(f"database backup {key} cannot be decrypted: {exc}") from exc
        except store.StoreError as exc:
            raise BackupFailed(f"could not download database backup {key}: {exc}") from exc
        finally:
            body.close()
        if digest.hexdigest() != meta.get(META_SHA256) or str(size) != meta.get(META_SIZE):
            raise BackupFailed(
                f"database backup {key} decrypted to {size} bytes with SHA-256 "
                f"{digest.hexdigest()}, not the {meta.get(META_SIZE)} bytes with "
                f"{meta.get(META_SHA256)} it was written with")
        yield ReplicaBackup(key, meta.get(META_ENGINE, ""), size, digest.hexdigest(), path)


def restore_from_replica(key: str = "latest", alias: str = "default") -> str:
    """Restore the database from a replica backup (``latest`` or its key); returns the key.
    The engine must be the one the backup was dumped from."""
    if not store.configured():
        raise BackupFailed("no replica is configured (REPLICA_URL)")
    key = latest_backup() if key == "latest" else _full_key(key)
    with fetched(key) as backup:
        if backup.engine != engine(alias):
            raise BackupFailed(f"backup {key} is of a {backup.engine or 'unknown'} database, "
                               f"this one is {engine(alias)}")
        assert backup.path is not None
        restore(backup.path, alias)
    return key


def _full_key(key: str) -> str:
    """A backup's key, also when given by its name alone (as listed, without the folder)."""
    return key if key.startswith(replica_prefix()) else replica_prefix() + key


def record_replica_backup(backup: ReplicaBackup, by: str) -> None:
    """The backup on the audit trail, after the dump (so the restored trail lacks it)."""
    from audit.models import AuditAction
    from audit.trail import Actor, record

    record(AuditAction.EXPORT, Actor.system(by),
           detail={"database_backup": {"engine": backup.engine, "bytes": backup.size,
                                       "replica_key": backup.key}})
