"""The database's own backup: dumped while live, restored after a loss, rows and the audit
chain back as they were. Runs on the suite's database: SQLite by default, PostgreSQL in CI
(pg_dump and pg_restore)."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from accounts.models import User
from audit.models import AuditAction, AuditEvent
from audit.trail import Actor, first_broken_link, record

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_dump_brings_back_users_and_the_audit_trail_after_a_loss(tmp_path: Path):
    User.objects.create_user("rita", password="x-Long-Passw0rd", first_name="Rita")
    record(AuditAction.VIEW, Actor.system("test"))
    dump = tmp_path / "portal.dump"
    call_command("backup_database", "--to", str(dump))
    assert dump.stat().st_size > 0
    entries = AuditEvent.objects.count()  # the backup's own entry came after the dump

    User.objects.filter(username="rita").delete()  # the loss
    User.objects.create_user("later", password="x-Long-Passw0rd")  # written after the dump
    call_command("restore_database", str(dump), "--yes")

    assert User.objects.get(username="rita").first_name == "Rita"
    assert not User.objects.filter(username="later").exists()
    assert AuditEvent.objects.count() == entries - 1
    assert first_broken_link() is None


def test_the_backup_is_on_the_trail(tmp_path: Path):
    call_command("backup_database", "--to", str(tmp_path / "portal.dump"))
    entry = AuditEvent.objects.get(action=AuditAction.EXPORT, username="backup_database")
    assert entry.detail["database_backup"]["bytes"] > 0


def test_restoring_asks_for_confirmation_and_a_dump(tmp_path: Path):
    dump = tmp_path / "portal.dump"
    call_command("backup_database", "--to", str(dump))
    with pytest.raises(CommandError, match="--yes"):
        call_command("restore_database", str(dump))
    with pytest.raises(CommandError, match="no dump"):
        call_command("restore_database", str(tmp_path / "missing.dump"), "--yes")
    with pytest.raises(CommandError, match="exists"):
        call_command("backup_database", "--to", str(dump))
