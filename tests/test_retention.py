"""Retention: when records may go, legal holds that keep them, listing what is due, and the
admin-approved purge that removes rows and files together and leaves a tombstone."""

from __future__ import annotations

import datetime
import threading
import time
from pathlib import Path

import pytest
from auditlog.models import LogEntry
from django.core.exceptions import PermissionDenied
from django.core.files.storage import FileSystemStorage
from django.core.management import call_command
from django.db import connection, transaction

from accounts.models import Clinic, Consent, Purpose
from audit.models import AuditAction, AuditEvent, Outcome
from imaging.models import Instance, Patient, Series, Study
from imaging.synthetic import PatientSpec, SeriesSpec, write_study
from privacy import consent, retention
from privacy import export as exports
from privacy.models import LegalHold, PendingBlobDeletion, PurgeRequest, Tombstone
from privacy.retention import PurgeRefused
from privacy.tasks import delete_pending_blobs, list_retention_due
from tests.conftest import stored_files

from .conftest import ingest_paths

# paula's CT is from 2026-03-02, charlie's MR from 2025-11-20; both adults then.
PAULA_DUE = datetime.date(2046, 3, 2)
AFTER_BOTH = datetime.date(2047, 1, 1)






@pytest.fixture
def paulas_record(paula, ct_study) -> Patient:
    ingest_paths(ct_study[1])
    patient = Patient.objects.get(patient_id="PAULA-001")
    patient.user = paula
    patient.save()
    return patient


@pytest.fixture
def charlies_record(other_study) -> Patient:
    ingest_paths(other_study[1])
    return Patient.objects.get(patient_id="CHARLIE-002")


@pytest.fixture
def olgas_old_record(db, tmp_path: Path) -> Patient:
    """Real files of a CT taken in 2001: past retention today."""
    olga = PatientSpec("OLGA-003", "Oliveira^Olga", datetime.date(1940, 2, 2), "F")
    _, paths = write_study(tmp_path / "old-ct", olga, [SeriesSpec("CT", 3, size=64)],
                           study_date=datetime.date(2001, 7, 9), accession="ACC-OLGA-1",
                           description="TC abdome")
    ingest_paths(paths)
    return Patient.objects.get(patient_id="OLGA-003")


def _patient_with_exams(patient_id: str, birth: datetime.date | None,
                        *exam_days: datetime.date | None, clinic: Clinic | None = None
                        ) -> Patient:
    patient = Patient.objects.create(patient_id=patient_id, name="Teste^Ana", birth_date=birth,
                                     clinic=clinic)
    for n, day in enumerate(exam_days):
        Study.objects.create(study_instance_uid=f"2.25.{patient.pk}{n}", patient=patient,
                             study_date=day)
    return patient


# --- When retention ends --------------------------------------------------------------------

def test_an_adults_records_are_kept_20_years_after_the_last_exam_by_default(paulas_record):
    assert retention.retention_end(paulas_record) == PAULA_DUE


def test_the_clinics_retention_years_count_from_the_latest_exam(db):
    clinic = Clinic.objects.create(name="Clínica Sul", retention_years=25)
    patient = _patient_with_exams("A-1", datetime.date(1960, 5, 5), datetime.date(2001, 1, 10),
                                  datetime.date(2010, 6, 1), clinic=clinic)
    assert retention.retention_end(patient) == datetime.date(2035, 6, 1)


def test_a_minor_at_the_last_exam_is_kept_until_the_clinics_age_if_that_is_later(db):
    patient = _patient_with_exams("M-1", datetime.date(2015, 1, 1), datetime.date(2020, 6, 1))
    # 2020 + 20 = 2040, but a minor's records stay until age 38 (clinic default): 2053
    assert retention.retention_end(patient) == datetime.date(2053, 1, 1)
    clinic = Clinic.objects.create(name="Clínica Kids", retention_years=20,
                                   minor_retention_age=21)
    patient.clinic = clinic
    patient.save()
    # age 21 is 2036, before 2040: the ordinary rule is the later one
    assert retention.retention_end(patient) == datetime.date(2040, 6, 1)


def test_an_exam_taken_as_an_adult_ends_the_minor_rule(db):
    patient = _patient_with_exams("M-2", datetime.date(2000, 3, 1), datetime.date(2010, 1, 1),
                                  datetime.date(2019, 1, 1))
    assert retention.retention_end(patient) == datetime.date(2039, 1, 1)


def test_a_leap_day_birthday_ends_on_the_28th_in_ordinary_years(db):
    patient = _patient_with_exams("M-3", datetime.date(2012, 2, 29), datetime.date(2016, 2, 29))
    assert retention.retention_end(patient) == datetime.date(2050, 2, 28)


# --- Listing --------------------------------------------------------------------------------

def test_listing_finds_only_patients_past_retention(paulas_record, charlies_record):
    listed = retention.list_due(datetime.date(2046, 1, 1))
    assert [r.patient for r in listed] == [charlies_record]
    request = listed[0]
    assert (request.retention_end, request.last_exam, request.status) == (
        datetime.date(2045, 11, 20), datetime.date(2025, 11, 20), PurgeRequest.Status.LISTED)


def test_listing_twice_lists_each_patient_once(paulas_record, charlies_record):
    assert len(retention.list_due(AFTER_BOTH)) == 2
    assert retention.list_due(AFTER_BOTH) == []
    assert PurgeRequest.objects.count() == 2


def test_listing_deletes_nothing(paulas_record, charlies_record, dicom_storage):
    files = stored_files(dicom_storage)
    retention.list_due(AFTER_BOTH)
    call_command("list_retention_due", "--today", AFTER_BOTH.isoformat())
    assert Instance.objects.count() == 16 and Patient.objects.count() == 2
    assert stored_files(dicom_storage) == files


def test_a_legal_hold_on_the_patient_keeps_them_off_the_list(paulas_record, alice):
    retention.place_hold(patient=paulas_record, reason="processo 123", by=alice)
    assert retention.list_due(AFTER_BOTH) == []


def test_a_legal_hold_on_one_study_keeps_the_patient_off_the_list(paulas_record, alice):
    retention.place_hold(study=paulas_record.studies.get(), reason="perícia", by=alice)
    assert retention.list_due(AFTER_BOTH) == []


def test_a_lifted_hold_no_longer_keeps_the_patient(paulas_record, alice):
    hold = retention.place_hold(patient=paulas_record, reason="processo 123", by=alice)
    retention.lift_hold(hold, alice)
    assert [r.patient for r in retention.list_due(AFTER_BOTH)] == [paulas_record]


def test_a_hold_is_on_a_patient_or_a_study_and_has_a_reason(paulas_record, alice):
    with pytest.raises(ValueError):
        retention.place_hold(reason="x", by=alice)
    with pytest.raises(ValueError):
        retention.place_hold(patient=paulas_record, study=paulas_record.studies.get(),
                             reason="x", by=alice)
    with pytest.raises(ValueError):
        retention.place_hold(patient=paulas_record, reason=" ", by=alice)


def test_the_periodic_task_and_the_command_list_what_is_due_today(db, capsys):
    _patient_with_exams("OLD-1", datetime.date(1950, 1, 1), datetime.date(1990, 1, 1))
    _patient_with_exams("NEW-1", datetime.date(1950, 1, 1), datetime.date(2024, 1, 1))
    assert list_retention_due.delay().get() == 1
    assert PurgeRequest.objects.get().patient_ref == "OLD-1"
    PurgeRequest.objects.all().delete()
    call_command("list_retention_due")
    assert "listed OLD-1" in capsys.readouterr().out


# --- Purge ----------------------------------------------------------------------------------

def _listed(patient: Patient) -> PurgeRequest:
    listed = [r for r in retention.list_due(AFTER_BOTH) if r.patient_pk == patient.pk]
    assert listed
    return listed[0]


def test_nothing_is_purged_without_approval(paulas_record, alice, dicom_storage):
    request = _listed(paulas_record)
    with pytest.raises(PurgeRefused, match="not approved"):
        retention.purge(request.pk, alice, "prazo vencido", today=AFTER_BOTH)
    assert Instance.objects.count() == 12 and len(stored_files(dicom_storage)) == 12
    assert Tombstone.objects.count() == 0


def test_only_admins_approve_or_purge(paulas_record, dora):
    request = _listed(paulas_record)
    with pytest.raises(PermissionDenied):
        retention.approve(request.pk, dora, "prazo vencido")
    with pytest.raises(PermissionDenied):
        retention.purge(request.pk, dora, "prazo vencido", today=AFTER_BOTH)


def test_a_purge_removes_rows_and_files_and_leaves_a_tombstone_and_an_audit_entry(
    paulas_record, charlies_record, paula, alice, dicom_storage, media_storage,
    django_capture_on_commit_callbacks,
):
    paula_pk = paulas_record.pk
    study_uid = paulas_record.studies.get().study_instance_uid
    consent.give(paulas_record, Purpose.RESEARCH, "2026.1", Consent.Channel.PORTAL, paula)
    with django_capture_on_commit_callbacks(execute=True):
        exports.request_export(paulas_record, paula)
    assert len(list(media_storage.rglob("*.zip"))) == 1
    charlies_keys = set(Instance.objects.filter(series__study__patient=charlies_record)
                        .values_list("blob_key", flat=True))
    request = _listed(paulas_record)
    retention.approve(request.pk, alice, "retenção de 20 anos vencida")
    with django_capture_on_commit_callbacks(execute=True):
        tombstone = retention.purge(request.pk, alice, "retenção de 20 anos vencida",
                                    today=AFTER_BOTH)

    assert not Patient.objects.filter(pk=paula_pk).exists()
    assert not Study.objects.filter(study_instance_uid=study_uid).exists()
    assert not Series.objects.filter(study__patient_id=paula_pk).exists()
    assert Instance.objects.count() == 4  # charlie's
    assert {str(p.relative_to(dicom_storage)) for p in stored_files(dicom_storage)} == (
        charlies_keys)
    assert list(media_storage.rglob("*.zip")) == []
    assert not Consent.objects.exists()

    tombstone.refresh_from_db()
    assert (tombstone.patient_id, tombstone.initials, tombstone.num_instances) == (
        "PAULA-001", "PP", 12)
    assert tombstone.studies[0]["uid"] == study_uid
    assert tombstone.studies[0]["date"] == "2026-03-02"
    assert (tombstone.approved_by, tombstone.purged_by_name) == (alice, "alice")
    assert tombstone.reason == "retenção de 20 anos vencida"
    assert tombstone.blobs_deleted is not None
    assert not PendingBlobDeletion.objects.exists()
    assert "Pereira" not in str(Tombstone.objects.filter(pk=tombstone.pk).values().get())
    request.refresh_from_db()
    assert request.status == PurgeRequest.Status.PURGED and request.patient is None

    deletion = AuditEvent.objects.filter(action=AuditAction.DELETE, level="patient").get()
    assert (deletion.patient_pk, deletion.username, deletion.outcome) == (
        paula_pk, "alice", Outcome.ALLOWED)
    assert deletion.reason == "retenção de 20 anos vencida"
    assert deletion.detail["tombstone"] == tombstone.pk
    assert AuditEvent.objects.filter(action=AuditAction.DELETE, level="study",
                                     study_uid=study_uid).exists()
    # django-auditlog's copies of the name and birth date go with the patient
    assert not any("Pereira" in str(e.changes) or "Pereira" in e.object_repr
                   for e in LogEntry.objects.all())


def test_files_are_deleted_only_after_the_rows_are_gone_for_good(
    paulas_record, alice, dicom_storage, django_capture_on_commit_callbacks,
):
    request = _listed(paulas_record)
    retention.approve(request.pk, alice, "vencido")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        retention.purge(request.pk, alice, "vencido", today=AFTER_BOTH)
    # committed: the rows are gone, the files not yet, and each is listed for deletion
    assert Instance.objects.count() == 0
    assert len(stored_files(dicom_storage)) == 12
    assert PendingBlobDeletion.objects.count() == 12
    for callback in callbacks:
        callback()
    assert stored_files(dicom_storage) == [] and not PendingBlobDeletion.objects.exists()


class _RefusingStorage(FileSystemStorage):
    """A storage that is down: reads work, deletes fail (like an S3 permission error)."""

    def delete(self, name: str) -> None:
        raise OSError("storage unavailable")


def test_a_file_that_cannot_be_deleted_is_kept_on_the_list_and_retried(
    paulas_record, alice, dicom_storage, settings, django_capture_on_commit_callbacks,
):
    request = _listed(paulas_record)
    retention.approve(request.pk, alice, "vencido")
    working = settings.STORAGES
    settings.STORAGES = {**working, "dicom": {
        "BACKEND": f"{__name__}._RefusingStorage", "OPTIONS": {"location": str(dicom_storage)},
    }}
    with django_capture_on_commit_callbacks(execute=True):
        tombstone = retention.purge(request.pk, alice, "vencido", today=AFTER_BOTH)
    assert Instance.objects.count() == 0
    pending = PendingBlobDeletion.objects.filter(tombstone=tombstone)
    assert pending.count() == 12
    assert all(p.attempts == 1 and "storage unavailable" in p.last_error for p in pending)
    tombstone.refresh_from_db()
    assert tombstone.blobs_deleted is None

    settings.STORAGES = working
    assert delete_pending_blobs.delay().get() == 0
    assert stored_files(dicom_storage) == [] and not PendingBlobDeletion.objects.exists()
    tombstone.refresh_from_db()
    assert tombstone.blobs_deleted is not None


def test_a_hold_placed_after_listing_blocks_the_purge(paulas_record, alice, dicom_storage):
    request = _listed(paulas_record)
    retention.approve(request.pk, alice, "vencido")
    retention.place_hold(study=paulas_record.studies.get(), reason="ação judicial", by=alice)
    with pytest.raises(PurgeRefused, match="legal hold"):
        retention.purge(request.pk, alice, "vencido", today=AFTER_BOTH)
    assert Instance.objects.count() == 12 and len(stored_files(dicom_storage)) == 12
    assert not Tombstone.objects.exists()
    assert not AuditEvent.objects.filter(action=AuditAction.DELETE).exists()
    request.refresh_from_db()
    assert request.status == PurgeRequest.Status.CANCELLED and "legal hold" in request.note


def test_a_new_exam_after_listing_blocks_the_purge(paulas_record, alice):
    request = _listed(paulas_record)
    retention.approve(request.pk, alice, "vencido")
    Study.objects.create(study_instance_uid="2.25.777", patient=paulas_record,
                         study_date=datetime.date(2040, 1, 1))
    with pytest.raises(PurgeRefused, match="not past retention"):
        retention.purge(request.pk, alice, "vencido", today=AFTER_BOTH)
    assert Patient.objects.filter(pk=paulas_record.pk).exists()


def test_a_held_patient_cannot_be_deleted_by_any_path(paulas_record, alice):
    from django.db.models import ProtectedError

    retention.place_hold(patient=paulas_record, reason="processo", by=alice)
    with pytest.raises(ProtectedError):
        paulas_record.delete()


def test_purging_twice_returns_the_same_tombstone(paulas_record, alice,
                                                  django_capture_on_commit_callbacks):
    request = _listed(paulas_record)
    retention.approve(request.pk, alice, "vencido")
    with django_capture_on_commit_callbacks(execute=True):
        first = retention.purge(request.pk, alice, "vencido", today=AFTER_BOTH)
        second = retention.purge(request.pk, alice, "vencido", today=AFTER_BOTH)
    assert first == second and Tombstone.objects.count() == 1
    assert AuditEvent.objects.filter(action=AuditAction.DELETE, level="patient").count() == 1


def test_the_admin_asks_for_a_reason_before_it_approves_and_purges(
    olgas_old_record, logged_in, dicom_storage, django_capture_on_commit_callbacks,
):
    [request] = retention.list_due()
    url = "/admin/privacy/purgerequest/"
    chosen = {"action": "approve_and_purge", "_selected_action": [request.pk]}
    confirm = logged_in.post(url, chosen)
    assert confirm.status_code == 200
    assert 'name="reason"' in confirm.content.decode()
    assert logged_in.post(url, {**chosen, "confirm": "yes", "reason": ""}).status_code == 200
    assert Patient.objects.filter(pk=olgas_old_record.pk).exists()

    with django_capture_on_commit_callbacks(execute=True):
        done = logged_in.post(url, {**chosen, "confirm": "yes",
                                    "reason": "retenção vencida, aprovado em reunião"})
    assert done.status_code == 302
    tombstone = Tombstone.objects.get()
    assert tombstone.reason == "retenção vencida, aprovado em reunião"
    assert (tombstone.approved_by_name, tombstone.initials) == ("alice", "OO")
    assert not Patient.objects.filter(pk=olgas_old_record.pk).exists()
    assert stored_files(dicom_storage) == []


def test_the_admin_places_and_lifts_holds_and_shows_tombstones_read_only(
    paulas_record, logged_in, alice
):
    response = logged_in.post("/admin/privacy/legalhold/add/", {
        "patient": paulas_record.pk, "reason": "processo 42",
    })
    assert response.status_code == 302
    hold = LegalHold.objects.get()
    assert hold.placed_by == alice and hold.active
    logged_in.post("/admin/privacy/legalhold/", {"action": "lift_selected",
                                                 "_selected_action": [hold.pk]})
    hold.refresh_from_db()
    assert hold.lifted is not None and hold.lifted_by == alice
    assert logged_in.get("/admin/privacy/tombstone/").status_code == 200
    assert logged_in.get("/admin/privacy/tombstone/add/").status_code == 403


def test_every_privacy_admin_page_opens_for_an_admin(paulas_record, paula, logged_in, alice,
                                                     django_capture_on_commit_callbacks):
    consent.give(paulas_record, Purpose.SHARING, "2026.1", Consent.Channel.PAPER, alice)
    with django_capture_on_commit_callbacks(execute=True):
        exports.request_export(paulas_record, paula)
    retention.place_hold(patient=paulas_record, reason="processo", by=alice)
    _patient_with_exams("OLD-2", datetime.date(1950, 1, 1), datetime.date(1990, 1, 1))
    retention.list_due()
    for model in ("accounts/consent", "privacy/dataexport", "privacy/legalhold",
                  "privacy/purgerequest", "privacy/tombstone", "privacy/pendingblobdeletion"):
        assert logged_in.get(f"/admin/{model}/").status_code == 200, model
    assert logged_in.get("/admin/accounts/consent/add/").status_code == 200
    assert logged_in.get("/admin/privacy/legalhold/add/").status_code == 200
    assert logged_in.get("/admin/privacy/purgerequest/add/").status_code == 403


@pytest.mark.postgres
def test_a_hold_placed_while_a_purge_starts_wins(transactional_db, alice):
    """place_hold and purge take the same lock on the patient row, so a hold committed
    while a purge waits for that lock is seen by the purge."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL's row locks")
    patient = _patient_with_exams("RACE-1", datetime.date(1950, 1, 1), datetime.date(1990, 1, 1))
    [request] = retention.list_due()
    retention.approve(request.pk, alice, "vencido")
    hold_placed = threading.Event()
    outcome: dict[str, str] = {}

    def hold() -> None:
        with transaction.atomic():
            # on a study: its row lock alone would not stop a purge of the patient
            retention.place_hold(study=Study.objects.get(patient=patient),
                                 reason="liminar", by=alice)
            hold_placed.set()
            time.sleep(1.0)  # the purge starts now and must wait for this commit
        connection.close()

    def purge() -> None:
        hold_placed.wait(5)
        try:
            retention.purge(request.pk, alice, "vencido")
            outcome["result"] = "purged"
        except PurgeRefused as exc:
            outcome["result"] = str(exc)
        connection.close()

    threads = [threading.Thread(target=hold), threading.Thread(target=purge)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert "legal hold" in outcome["result"]
    assert Patient.objects.filter(pk=patient.pk).exists()
    assert LegalHold.objects.filter(study__patient=patient, lifted__isnull=True).exists()
