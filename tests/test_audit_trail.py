"""The audit trail: append-only, hash-chained, verifiable, exportable, visible to patients."""

from __future__ import annotations

import datetime
import threading

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from audit.models import AuditAction, AuditEvent, Outcome
from audit.trail import Actor, Target, first_broken_link, record
from imaging.models import Patient


def _three_entries() -> list[AuditEvent]:
    actor = Actor.system("test")
    return [record(AuditAction.VIEW, actor, Target("study", f"1.2.{i}"))[0] for i in range(3)]


def _without_append_only_trigger(sql: str, params: list[str | int]) -> None:
    """Tamper the way someone with database access would: around the trigger."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_append_only")
            cursor.execute(sql, params)
            cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_append_only")
        else:
            cursor.execute("DROP TRIGGER audit_no_update")
            cursor.execute(sql, params)


def test_entries_are_numbered_and_each_points_at_the_previous_hash(db):
    first, second, third = _three_entries()
    assert (first.seq, second.seq, third.seq) == (1, 2, 3)
    assert second.prev_hash == first.entry_hash
    assert third.prev_hash == second.entry_hash
    assert first_broken_link() is None


def test_one_entry_per_target_each_with_its_own_row_and_the_chain_intact(db):
    actor = Actor.peer("WORKSTATION", "127.0.0.1", 104)
    targets = [Target("patient", f"P-{i}", None if i % 3 == 0 else 1000 + i, f"P-{i}^ISSUER")
               for i in range(120)]
    events = record(AuditAction.SEARCH, actor, targets, Outcome.ALLOWED, reason="why",
                    detail={"query": {"PatientName": "*silva*"}, "hits": 120})
    stored = {row.seq: row for row in AuditEvent.objects.filter(action=AuditAction.SEARCH)}
    assert [e.seq for e in events] == list(range(1, 121)) == sorted(stored)
    for event, target in zip(events, targets, strict=True):
        row = stored[event.seq]
        assert row.pk == event.pk  # the entry returned is the row written
        assert (row.object_uid, row.patient_pk, row.patient_ref) == (
            target.uid, target.patient_pk, target.patient_ref)
        assert (row.peer_ae, row.reason, row.detail["hits"], row.at) == (
            "WORKSTATION", "why", 120, events[0].at)
        assert row.entry_hash == event.entry_hash
    assert first_broken_link() is None


def test_the_database_refuses_to_change_an_entry(db):
    _three_entries()
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.filter(seq=2).update(reason="nothing to see")


def test_the_model_refuses_to_save_or_delete_an_existing_entry(db):
    entry = _three_entries()[0]
    with pytest.raises(PermissionError):
        entry.save()
    with pytest.raises(PermissionError):
        entry.delete()


def test_verify_audit_reports_the_first_altered_entry(db):
    _three_entries()
    _without_append_only_trigger(
        "UPDATE audit_auditevent SET username = %s WHERE seq = %s", ["mallory", 2]
    )
    with pytest.raises(CommandError, match="entry 2"):
        call_command("verify_audit")


def test_verify_audit_reports_a_removed_entry(db):
    _three_entries()
    _without_append_only_trigger("DELETE FROM audit_auditevent WHERE seq = %s", [2])
    broken = first_broken_link()
    assert broken is not None and broken.seq == 3 and "missing" in broken.problem


def test_verify_audit_notices_entries_cut_off_the_end(db):
    _three_entries()
    _without_append_only_trigger("DELETE FROM audit_auditevent WHERE seq = %s", [3])
    broken = first_broken_link()
    assert broken is not None and "removed" in broken.problem


def test_verify_audit_prints_the_count_when_intact(db, capsys):
    _three_entries()
    call_command("verify_audit")
    assert "intact: 3 entries" in capsys.readouterr().out


def test_an_entry_records_who_what_when_where_and_the_outcome(db, dora):
    patient = Patient.objects.create(patient_id="P-9", name="Lima^Rui")
    actor = Actor.for_user(dora, ip="10.0.0.7", client="Firefox")
    (entry,) = record(AuditAction.VIEW, actor, Target.patient(patient), Outcome.DENIED,
                      reason="no grant")
    entry = AuditEvent.objects.get(pk=entry.pk)
    assert (entry.username, entry.role, entry.ip, entry.client) == ("dora", "doctor",
                                                                    "10.0.0.7", "Firefox")
    assert (entry.action, entry.outcome, entry.patient_pk) == ("view", "denied", patient.pk)
    assert abs((timezone.now() - entry.at).total_seconds()) < 5
    assert first_broken_link() is None


@pytest.mark.postgres
def test_concurrent_writers_keep_one_unbroken_chain(transactional_db):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL's row locks")

    def write(n: int) -> None:
        for i in range(25):
            record(AuditAction.SEARCH, Actor.system(f"writer-{n}"), Target("study", str(i)))
        connection.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert AuditEvent.objects.count() == 150
    assert first_broken_link() is None


def test_admins_export_a_period_as_csv_and_the_export_is_itself_recorded(client, alice):
    old = _three_entries()[0]
    today = timezone.localdate()
    client.force_login(alice)
    response = client.get(
        "/admin/audit/auditevent/export/", {"start": str(today), "end": str(today)}
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert lines[0].startswith("seq,at,username")
    assert len(lines) == 1 + 3 + 1  # header, the three entries, the export itself
    assert old.entry_hash in lines[1]
    assert ",alice,admin," in lines[-1] and ",export," in lines[-1]
    assert AuditEvent.objects.filter(action="export", username="alice").exists()

    yesterday = today - datetime.timedelta(days=1)
    earlier = client.get(
        "/admin/audit/auditevent/export/", {"start": str(yesterday), "end": str(yesterday)}
    )
    assert len(b"".join(earlier.streaming_content).decode().splitlines()) == 1


def test_the_export_needs_a_valid_period(client, alice):
    client.force_login(alice)
    response = client.get("/admin/audit/auditevent/export/", {"start": "2026-13-01"})
    assert response.status_code == 400


def test_only_admins_reach_the_audit_admin(client, dora):
    client.force_login(dora)
    response = client.get("/admin/audit/auditevent/export/",
                          {"start": "2026-01-01", "end": "2026-01-02"})
    assert response.status_code == 302  # to the admin login, not the data


def test_a_patient_sees_who_accessed_their_exams_and_nothing_about_others(client, paula, dora):
    mine = Patient.objects.create(patient_id="PAULA-001", name="Pereira^Paula", user=paula)
    other = Patient.objects.create(patient_id="CHARLIE-002", name="Costa^Charlie")
    record(AuditAction.VIEW, Actor.for_user(dora), Target("study", "1.2.3", mine.pk,
                                                          "PAULA-001", "1.2.3"))
    record(AuditAction.VIEW, Actor.for_user(dora), Target("study", "9.9.9", other.pk,
                                                          "CHARLIE-002", "9.9.9"))
    client.force_login(paula)
    page = client.get("/audit/my-access/").content.decode()
    assert "Dora Lima" in page and "1.2.3" in page
    assert "9.9.9" not in page


def test_changes_to_grants_and_patients_are_recorded_by_auditlog(alice, dora):
    from auditlog.models import LogEntry

    from accounts.models import AccessGrant, Clinic

    clinic = Clinic.objects.create(name="Clínica Norte")
    patient = Patient.objects.create(patient_id="P-1", name="Alves^Bia")
    grant = AccessGrant.objects.create(doctor=dora, patient=patient, clinic=clinic)
    grant.reason = "segunda opinião"
    grant.save()
    entries = LogEntry.objects.get_for_object(grant)
    assert [e.action for e in entries.order_by("timestamp")] == [
        LogEntry.Action.CREATE, LogEntry.Action.UPDATE]
    assert "segunda opinião" in str(entries.order_by("timestamp").last().changes)
