"""The database's backup, encrypted, on the replica (a real S3 endpoint, moto's server mode):
dumped while live, nothing readable in the bucket, read back before it counts, the N most
recent kept, and restored after a loss from the replica alone. Runs on the suite's
database: SQLite by default, PostgreSQL with DATABASE_URL (pg_dump and pg_restore)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from accounts.models import User
from audit.models import AuditAction, AuditEvent
from audit.trail import first_broken_link
from replica import database_backup, tasks
from replica.crypto import Envelope
from tests.celery_support import REDIS_URL, run_on_worker
from tests.s3_support import s3_endpoint  # noqa: F401 - a fixture
from tests.test_replication import (  # noqa: F401 - a fixture
    _bucket,
    _configure,
    replica,
)

pytestmark = pytest.mark.django_db(transaction=True)

SECRET_NAME = "Pereira-Backup"


def _backups(bucket: Any) -> list[str]:
    return sorted(o.key for o in bucket.objects.filter(Prefix="objects/db/"))


def test_a_backup_on_the_replica_holds_no_clear_sql_or_names_and_its_envelope_is_in_its_metadata(
    replica, tmp_path  # noqa: F811
):
    User.objects.create_user("rita", password="x-Long-Passw0rd", last_name=SECRET_NAME)
    plain = tmp_path / "plain.dump"
    database_backup.dump(plain)
    clear = plain.read_bytes()
    secrets = [s for s in (b"CREATE TABLE", SECRET_NAME.encode(), b"accounts_user")
               if s in clear]
    assert b"CREATE TABLE" in secrets  # the dump itself shows them (its data may be zipped)

    backup = database_backup.to_replica()

    assert _backups(replica) == [backup.key]
    assert backup.key.startswith("objects/db/") and backup.engine == connection.vendor
    obj = replica.Object(backup.key).get()
    stored = obj["Body"].read()
    for secret in secrets:
        assert secret not in stored
    assert Envelope.from_metadata(obj["Metadata"]).key_id == "k1"
    assert obj["Metadata"]["backup-sha256"] == backup.sha256
    assert all(SECRET_NAME not in v for v in obj["Metadata"].values())


def test_a_backup_restored_from_the_replica_brings_back_the_rows_after_a_loss(replica):  # noqa: F811
    User.objects.create_user("rita", password="x-Long-Passw0rd", first_name="Rita")
    call_command("backup_database", "--to-replica")
    entries = AuditEvent.objects.count()  # the backup's own entry came after the dump
    assert AuditEvent.objects.filter(action=AuditAction.EXPORT,
                                     username="backup_database").count() == 1

    User.objects.filter(username="rita").delete()  # the loss
    User.objects.create_user("later", password="x-Long-Passw0rd")
    call_command("restore_database", "--from-replica", "--yes")

    assert User.objects.get(username="rita").first_name == "Rita"
    assert not User.objects.filter(username="later").exists()
    assert AuditEvent.objects.count() == entries - 1
    assert first_broken_link() is None


def test_a_named_backup_is_restored_rather_than_the_latest(replica, settings):  # noqa: F811
    User.objects.create_user("first", password="x-Long-Passw0rd")
    older = database_backup.to_replica()
    User.objects.create_user("second", password="x-Long-Passw0rd")
    database_backup.to_replica()

    call_command("restore_database", "--from-replica", older.key.rsplit("/", 1)[1], "--yes")

    assert User.objects.filter(username="first").exists()
    assert not User.objects.filter(username="second").exists()


def test_only_the_most_recent_backups_are_kept(replica, settings):  # noqa: F811
    settings.DATABASE_BACKUP_KEEP = 2
    replica.put_object(Key="objects/db/notes.txt", Body=b"not a backup")  # never pruned
    keys = [database_backup.to_replica().key for _ in range(4)]
    assert keys == sorted(keys)
    assert _backups(replica) == sorted([*keys[2:], "objects/db/notes.txt"])
    assert database_backup.latest_backup() == keys[-1]


def test_a_damaged_backup_is_refused_and_nothing_is_restored(replica):  # noqa: F811
    User.objects.create_user("rita", password="x-Long-Passw0rd")
    backup = database_backup.to_replica()
    obj = replica.Object(backup.key).get()
    body = bytearray(obj["Body"].read())
    body[-40] ^= 0x01
    replica.put_object(Key=backup.key, Body=bytes(body), Metadata=obj["Metadata"])
    User.objects.create_user("later", password="x-Long-Passw0rd")

    with pytest.raises(CommandError, match="cannot be decrypted"):
        call_command("restore_database", "--from-replica", "latest", "--yes")
    assert User.objects.filter(username="later").exists()  # the database is untouched


def test_restoring_from_the_replica_asks_for_confirmation_and_a_backup(replica, tmp_path):  # noqa: F811
    with pytest.raises(CommandError, match="no database backup"):
        call_command("restore_database", "--from-replica", "--yes")
    database_backup.to_replica()
    with pytest.raises(CommandError, match="--yes"):
        call_command("restore_database", "--from-replica")
    with pytest.raises(CommandError, match="not both"):
        call_command("restore_database", str(tmp_path / "x.dump"), "--from-replica", "--yes")
    with pytest.raises(CommandError, match=r"NoSuchKey|404|Not Found"):
        call_command("restore_database", "--from-replica", "20200101T000000000000Z-"
                     "0000000000000000", "--yes")


def test_without_a_replica_the_backup_refuses_and_the_daily_task_does_nothing(settings):
    settings.REPLICA_URL = ""
    with pytest.raises(CommandError, match="REPLICA_URL"):
        call_command("backup_database", "--to-replica")
    assert tasks.backup_database.delay().get() is None


def test_the_daily_task_writes_a_verified_backup(replica, settings):  # noqa: F811
    key = tasks.backup_database.delay().get()
    assert _backups(replica) == [key]
    assert "replica.tasks.backup_database" in {
        e["task"] for e in settings.CELERY_BEAT_SCHEDULE.values()}
    with database_backup.fetched(key) as fetched:
        assert fetched.path is not None and fetched.path.stat().st_size == fetched.size


@pytest.mark.slow
@pytest.mark.skipif(not REDIS_URL, reason="needs REDIS_URL pointing at a Redis server")
def test_a_celery_worker_runs_the_daily_backup(s3_endpoint, settings, dicom_storage,  # noqa: F811
                                               tmp_path):
    bucket = _bucket(s3_endpoint)
    env = _configure(settings, s3_endpoint, bucket.name)
    User.objects.create_user("rita", password="x-Long-Passw0rd", first_name="Rita")
    queue = f"test-backup-{uuid.uuid4().hex[:12]}"
    key = run_on_worker(tasks.backup_database, queue, dicom_storage, tmp_path / "worker.log",
                        env)
    assert _backups(bucket) == [key]
    User.objects.filter(username="rita").delete()
    call_command("restore_database", "--from-replica", key, "--yes")
    assert User.objects.get(username="rita").first_name == "Rita"


def test_reconcile_and_rebuild_index_leave_the_database_backups_alone(replica):  # noqa: F811
    import io

    from django.core.management import call_command

    call_command("backup_database", "--to-replica", stdout=io.StringIO())
    [backup] = _backups(replica)
    out = io.StringIO()
    call_command("reconcile", "--tier", "replica", "--min-age", "0", "--quarantine",
                 stdout=out, stderr=io.StringIO())  # clean: exits 0 without SystemExit
    assert backup not in out.getvalue()
    rebuilt = io.StringIO()
    call_command("rebuild_index", "--from", "replica", "--no-progress", stdout=rebuilt,
                 stderr=io.StringIO())
    assert backup not in rebuilt.getvalue()
    assert _backups(replica) == [backup]
