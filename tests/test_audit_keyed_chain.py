"""The chain head is signed with a key the database does not hold: someone who can write to
the database can rebuild the hash chain, but not its signature."""

from __future__ import annotations

import hashlib
import json

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from audit import chain
from audit.models import AuditAction, AuditCheckpoint, AuditEvent, ChainHead
from audit.trail import Actor, Target, first_broken_link, record


def _entries(n: int) -> None:
    for i in range(n):
        record(AuditAction.VIEW, Actor.system("test"), Target("study", f"1.2.{i}"))


def _rebuild_chain_without_the_key(username: str, seq: int) -> None:
    """What someone with database write access can do: change an entry, then recompute
    every SHA-256 link after it and move the head, all consistent, but unsigned."""
    rows = list(AuditEvent.objects.order_by("seq").values(*chain.CHAINED_FIELDS))
    prev = chain.GENESIS
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_append_only")
        else:
            cursor.execute("DROP TRIGGER audit_no_update")
        for row in rows:
            if row["seq"] == seq:
                row["username"] = username
            digest = chain.entry_hash(prev, row)
            cursor.execute(
                "UPDATE audit_auditevent SET username = %s, prev_hash = %s, entry_hash = %s"
                " WHERE seq = %s", [row["username"], prev, "x" + digest[1:], row["seq"]])
            cursor.execute("UPDATE audit_auditevent SET entry_hash = %s WHERE seq = %s",
                           [digest, row["seq"]])
            prev = digest
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_append_only")
    ChainHead.objects.filter(pk=1).update(seq=rows[-1]["seq"], entry_hash=prev)


def test_the_head_is_signed_with_the_chain_key_on_every_append(db):
    _entries(3)
    head = ChainHead.objects.get(pk=1)
    assert head.seq == 3
    assert chain.signed(head.seq, head.entry_hash, head.signature)
    assert first_broken_link() is None


def test_verify_audit_detects_a_chain_rebuilt_without_the_key(db):
    _entries(4)
    _rebuild_chain_without_the_key("mallory", 2)
    # Every SHA-256 link holds: only the signature gives the rebuild away.
    assert chain.verify(AuditEvent.objects.order_by("seq").values(
        *chain.CHAINED_FIELDS, "prev_hash", "entry_hash")) is None
    with pytest.raises(CommandError, match="signature"):
        call_command("verify_audit")


def test_a_head_signed_with_another_key_does_not_verify(db, settings):
    _entries(2)
    settings.AUDIT_CHAIN_KEY = "a key someone guessed"
    broken = first_broken_link()
    assert broken is not None and "signature" in broken.problem


def test_the_chain_key_is_derived_from_the_secret_key_but_is_not_it(settings):
    settings.AUDIT_CHAIN_KEY = ""
    derived = chain.chain_key()
    assert derived != settings.SECRET_KEY.encode()
    assert len(derived) == 32
    settings.AUDIT_CHAIN_KEY = "production key"
    assert chain.chain_key() == b"production key"


def test_signed_checkpoints_say_from_where_a_rebuilt_chain_differs(db, monkeypatch):
    monkeypatch.setattr(chain, "CHECKPOINT_EVERY", 2)
    _entries(5)
    assert list(AuditCheckpoint.objects.values_list("seq", flat=True)) == [2, 4]
    assert first_broken_link() is None
    _rebuild_chain_without_the_key("mallory", 1)
    broken = first_broken_link()
    assert broken is not None and broken.seq == 2 and "rebuilt" in broken.problem


def test_a_removed_checkpoint_is_reported(db, monkeypatch):
    monkeypatch.setattr(chain, "CHECKPOINT_EVERY", 2)
    _entries(3)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM audit_auditcheckpoint")
    broken = first_broken_link()
    assert broken is not None and broken.seq == 2 and "missing" in broken.problem


def test_entries_hash_as_they_did_when_the_actor_was_a_foreign_key(db, dora):
    """Entries written before user_pk replaced the ``user`` foreign key hashed the field as
    ``user_id``; the canonical form keeps that name, so they still verify."""
    (entry,) = record(AuditAction.VIEW, Actor.for_user(dora), Target("study", "1.2.3"))
    old_canonical = {name: getattr(entry, name) for name in (
        "seq", "username", "role", "peer_ae", "ip", "client", "action", "outcome", "level",
        "object_uid", "patient_pk", "patient_ref", "study_uid", "break_glass", "reason",
        "detail")}
    old_canonical.update(user_id=dora.pk, at=entry.at.isoformat())
    old = hashlib.sha256(entry.prev_hash.encode() + b"\n" + json.dumps(
        old_canonical, sort_keys=True, separators=(",", ":"), default=str).encode())
    assert old.hexdigest() == entry.entry_hash
    assert AuditEvent.objects.get(pk=entry.pk).user_pk == dora.pk


def test_changing_the_key_signs_the_chain_again_after_checking_the_old_one(
        db, settings, monkeypatch, capsys):
    monkeypatch.setattr(chain, "CHECKPOINT_EVERY", 2)
    settings.AUDIT_CHAIN_KEY = "old key"
    _entries(3)
    settings.AUDIT_CHAIN_KEY = "new key"
    assert first_broken_link() is not None
    monkeypatch.setenv("OLD_AUDIT_CHAIN_KEY", "a wrong old key")
    with pytest.raises(CommandError, match="not signed"):
        call_command("verify_audit", resign_from_env="OLD_AUDIT_CHAIN_KEY")
    monkeypatch.setenv("OLD_AUDIT_CHAIN_KEY", "old key")
    call_command("verify_audit", resign_from_env="OLD_AUDIT_CHAIN_KEY")
    assert "signed again" in capsys.readouterr().out
    assert first_broken_link() is None
