"""A patient's data export (LGPD art. 18): every exam as the original DICOM bytes plus who
accessed them, built in the background and handed out through a hashed, expiring link that
works only for the patient (or an admin)."""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import zipfile

import pytest
from django.core.exceptions import PermissionDenied
from django.core.files.storage import storages
from django.utils import timezone

from audit.models import AuditAction, AuditEvent, Outcome
from audit.trail import Actor, Target, record
from imaging.models import Instance, Patient, Study
from privacy import export as exports
from privacy.models import DataExport
from privacy.tasks import build_export, delete_expired_exports

from .conftest import ingest_paths


@pytest.fixture
def paulas_record(paula, ct_study) -> Patient:
    ingest_paths(ct_study[1])
    patient = Patient.objects.get(patient_id="PAULA-001")
    patient.user = paula
    patient.save()
    return patient


@pytest.fixture
def charlies_record(charlie, other_study) -> Patient:
    ingest_paths(other_study[1])
    patient = Patient.objects.get(patient_id="CHARLIE-002")
    patient.user = charlie
    patient.save()
    return patient


@pytest.fixture
def ready_export(paulas_record, paula, django_capture_on_commit_callbacks) -> DataExport:
    with django_capture_on_commit_callbacks(execute=True):
        export = exports.request_export(paulas_record, paula)
    export.refresh_from_db()
    assert export.status == DataExport.Status.READY, export.error
    return export


def _zip(export: DataExport) -> zipfile.ZipFile:
    with storages["default"].open(export.file_key, "rb") as fp:
        return zipfile.ZipFile(io.BytesIO(fp.read()))


def test_the_export_is_built_only_after_the_request_commits(
    paulas_record, paula, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        export = exports.request_export(paulas_record, paula)
    assert len(callbacks) == 1
    export.refresh_from_db()
    assert export.status == DataExport.Status.PENDING
    callbacks[0]()
    export.refresh_from_db()
    assert export.status == DataExport.Status.READY


def test_the_zip_holds_every_instance_byte_identical_to_the_original_files(
    ready_export, ct_study, charlies_record
):
    archive = _zip(ready_export)
    dicom = {name: archive.read(name) for name in archive.namelist()
             if name.startswith("DICOM/")}
    originals = {p.read_bytes() for p in ct_study[1]}
    assert len(dicom) == len(ct_study[1]) == 12
    assert set(dicom.values()) == originals
    for name, data in dicom.items():
        sop_uid = name.rsplit("/", 1)[1].removesuffix(".dcm")
        assert hashlib.sha256(data).hexdigest() == Instance.objects.get(
            sop_instance_uid=sop_uid).sha256
    assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
    assert ready_export.num_instances == 12
    assert ready_export.size_bytes == storages["default"].size(ready_export.file_key)


def test_the_zip_holds_nothing_of_another_patient(
    charlies_record, paulas_record, paula, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        export = exports.request_export(paulas_record, paula)
    export.refresh_from_db()
    charlies_uids = set(Instance.objects.filter(series__study__patient=charlies_record)
                        .values_list("sop_instance_uid", flat=True))
    names = " ".join(_zip(export).namelist())
    assert charlies_uids and not any(uid in names for uid in charlies_uids)


def test_the_access_report_lists_who_accessed_the_patients_data(
    paulas_record, charlies_record, paula, dora, django_capture_on_commit_callbacks
):
    study = Study.objects.get(patient=paulas_record)
    record(AuditAction.VIEW, Actor.for_user(dora), Target.study(study), Outcome.ALLOWED)
    record(AuditAction.DOWNLOAD, Actor.for_user(dora), Target.study(study), Outcome.DENIED,
           reason="no grant")
    record(AuditAction.VIEW, Actor.for_user(dora),
           Target.study(Study.objects.get(patient=charlies_record)), Outcome.ALLOWED)
    with django_capture_on_commit_callbacks(execute=True):
        export = exports.request_export(paulas_record, paula)
    export.refresh_from_db()
    report = _zip(export).read("access_report.csv").decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(report)))
    assert list(rows[0]) == list(exports.REPORT_FIELDS)
    expected = AuditEvent.objects.filter(patient_pk=paulas_record.pk,
                                         at__lte=export.started).count()
    assert len(rows) == expected
    by_dora = [(r["who"], r["role"], r["action"], r["outcome"], r["study"])
               for r in rows if r["who"] == "dora"]
    assert by_dora == [
        ("dora", "doctor", "view", "allowed", study.study_instance_uid),
        ("dora", "doctor", "download", "denied", study.study_instance_uid),
    ]
    assert charlies_record.patient_id not in report
    # the patient's own request is on record too
    assert any(r["who"] == "paula" and r["action"] == "export" for r in rows)


def test_the_readme_lists_every_file_with_its_checksum(ready_export):
    archive = _zip(ready_export)
    readme = archive.read("README.txt").decode("utf-8")
    for instance in Instance.objects.all():
        assert f"{instance.sha256}  DICOM/" in readme
    assert "access_report.csv" in readme


def test_running_the_task_again_does_nothing(ready_export, media_storage):
    files_before = sorted(media_storage.rglob("*.zip"))
    assert build_export.delay(ready_export.pk).get() == "skipped"
    assert exports.build(ready_export.pk) is None
    after = DataExport.objects.get(pk=ready_export.pk)
    assert (after.status, after.file_key, after.finished) == (
        ready_export.status, ready_export.file_key, ready_export.finished)
    assert sorted(media_storage.rglob("*.zip")) == files_before and len(files_before) == 1


def test_a_run_that_died_long_ago_may_be_claimed_again(paulas_record, paula):
    export = DataExport.objects.create(
        patient=paulas_record, requested_by=paula, status=DataExport.Status.RUNNING,
        started=timezone.now() - datetime.timedelta(hours=3),
    )
    fresh = DataExport.objects.create(
        patient=paulas_record, requested_by=paula, status=DataExport.Status.RUNNING,
        started=timezone.now(),
    )
    assert exports.build(fresh.pk) is None
    built = exports.build(export.pk)
    assert built is not None and built.status == DataExport.Status.READY


def test_a_damaged_blob_fails_the_export_instead_of_delivering_it(
    paulas_record, paula, dicom_storage, django_capture_on_commit_callbacks
):
    instance = Instance.objects.filter(series__study__patient=paulas_record).first()
    assert instance is not None
    blob = dicom_storage / instance.blob_key
    blob.write_bytes(blob.read_bytes()[:-10] + b"0123456789")
    with django_capture_on_commit_callbacks(execute=True):
        export = exports.request_export(paulas_record, paula)
    export.refresh_from_db()
    assert export.status == DataExport.Status.FAILED
    assert "checksum" in export.error and not export.file_key


def test_only_the_patient_or_an_admin_may_request_an_export(paulas_record, dora, charlie,
                                                            alice):
    for outsider in (dora, charlie):
        with pytest.raises(PermissionDenied):
            exports.request_export(paulas_record, outsider)
    assert exports.request_export(paulas_record, alice).requested_by == alice


def test_only_the_hash_of_the_link_token_is_stored(ready_export, paula):
    token = exports.issue_link(ready_export, paula)
    ready_export.refresh_from_db()
    assert len(token) >= 43
    assert ready_export.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(DataExport.objects.filter(pk=ready_export.pk).values().get())


def test_the_patient_downloads_the_file_through_the_link_which_is_counted_and_audited(
    ready_export, paula, client
):
    token = exports.issue_link(ready_export, paula)
    client.force_login(paula)
    response = client.get(f"/privacy/download/{token}/")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert "attachment" in response["Content-Disposition"]
    with storages["default"].open(ready_export.file_key, "rb") as fp:
        assert b"".join(response.streaming_content) == fp.read()
    ready_export.refresh_from_db()
    assert ready_export.downloads == 1
    event = AuditEvent.objects.filter(action=AuditAction.EXPORT,
                                      detail__step="download").get()
    assert (event.username, event.outcome, event.patient_pk) == (
        "paula", Outcome.ALLOWED, ready_export.patient_id)


def test_an_admin_may_download_a_patients_export(ready_export, alice, client):
    token = exports.issue_link(ready_export, alice)
    client.force_login(alice)
    assert client.get(f"/privacy/download/{token}/").status_code == 200


def test_the_link_refuses_another_signed_in_user_as_if_it_did_not_exist(
    ready_export, paula, charlie, dora, client
):
    token = exports.issue_link(ready_export, paula)
    for outsider in (charlie, dora):
        client.force_login(outsider)
        response = client.get(f"/privacy/download/{token}/")
        assert response.status_code == 404
        page = response.content.decode()
        assert "<h1>" in page and 'href="/privacy/"' in page
    ready_export.refresh_from_db()
    assert ready_export.downloads == 0
    assert AuditEvent.objects.filter(action=AuditAction.EXPORT, outcome=Outcome.DENIED,
                                     patient_pk=ready_export.patient_id).count() == 2


def test_the_link_needs_a_signed_in_user(ready_export, paula, client):
    token = exports.issue_link(ready_export, paula)
    response = client.get(f"/privacy/download/{token}/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_an_expired_link_shows_a_clear_page_with_gone(ready_export, paula, client):
    token = exports.issue_link(ready_export, paula)
    DataExport.objects.filter(pk=ready_export.pk).update(
        expires=timezone.now() - datetime.timedelta(minutes=1))
    client.force_login(paula)
    response = client.get(f"/privacy/download/{token}/")
    assert response.status_code == 410
    assert "<h1>" in response.content.decode() and "Traceback" not in response.content.decode()


def test_an_unknown_or_replaced_token_shows_a_clear_page_with_not_found(
    ready_export, paula, client
):
    old = exports.issue_link(ready_export, paula)
    new = exports.issue_link(ready_export, paula)
    client.force_login(paula)
    assert client.get("/privacy/download/not-a-real-token/").status_code == 404
    assert client.get(f"/privacy/download/{old}/").status_code == 404
    assert client.get(f"/privacy/download/{new}/").status_code == 200


def test_expired_exports_lose_their_file_and_their_link(ready_export, paula, media_storage):
    exports.issue_link(ready_export, paula)
    DataExport.objects.filter(pk=ready_export.pk).update(
        expires=timezone.now() - datetime.timedelta(minutes=1))
    assert delete_expired_exports.delay().get() == 1
    ready_export.refresh_from_db()
    assert ready_export.status == DataExport.Status.EXPIRED
    assert not ready_export.file_key and ready_export.token_hash is None
    assert list(media_storage.rglob("*.zip")) == []


def test_the_patient_is_told_by_mail_without_a_link(ready_export, mailoutbox):
    assert [m.to for m in mailoutbox] == [["paula@example.org"]]
    assert "/privacy/download/" not in mailoutbox[0].body
