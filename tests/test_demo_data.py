"""Demo data: patients with a current and a year-older prior study, stored through ingest,
made once however often the run command starts; and a printed admin login that works."""

from __future__ import annotations

import datetime
import hashlib
import io
import re

import pytest
from django.core.management import call_command
from django.test import Client

from accounts.models import AccessGrant, Role, User
from imaging import demo
from imaging.models import Instance, Patient, Series, Study

from .conftest import stored_files

pytestmark = pytest.mark.django_db

SMALL = {"slices": 2, "size": 32, "no_progress": True}


def _make(**options: object) -> str:
    out = io.StringIO()
    call_command("make_demo_data", stdout=out, **{**SMALL, **options})
    return out.getvalue()


def _logins(output: str) -> dict[str, tuple[str, str]]:
    """username -> (role, password) from the command's user table."""
    rows = re.findall(r"^\s+(\w+)\s+([\w.]+)\s+([A-Za-z0-9]{16})$", output, re.MULTILINE)
    return {username: (role, password) for role, username, password in rows}


def _signs_in(username: str, password: str) -> bool:
    client = Client()
    response = client.post("/accounts/login/", {"username": username, "password": password})
    return response.status_code == 302 and "_auth_user_id" in client.session


def test_each_demo_patient_has_a_current_study_and_a_prior_a_year_older(dicom_storage):
    _make()
    patients = Patient.objects.filter(issuer=demo.ISSUER).order_by("patient_id")
    assert len(patients) == len(demo.PATIENTS) >= 4
    today = datetime.date.today()
    for patient in patients:
        assert patient.name and patient.birth_date and patient.sex in ("F", "M")
        prior, current = patient.studies.order_by("study_date")
        assert current.study_date is not None and prior.study_date is not None
        assert (current.study_date - prior.study_date).days == 365
        assert today - current.study_date < datetime.timedelta(days=90)
        assert set(current.modalities.split("\\")) <= {"CT", "MR"}
    minors = [p for p in patients if p.birth_date and (today - p.birth_date).days < 18 * 365]
    assert len(minors) == 1
    assert {"CT", "MR"} == set(Series.objects.values_list("modality", flat=True))


def test_demo_images_are_stored_through_ingest_with_counts_and_checksums(dicom_storage):
    _make()
    per_study = SMALL["slices"] * 2  # two series of each study
    studies = Study.objects.all()
    assert len(studies) == 2 * len(demo.PATIENTS)
    for study in studies:
        assert study.num_series == 2
        assert study.num_instances == per_study
        assert Instance.objects.filter(series__study=study).count() == per_study
        assert study.size_bytes == sum(
            Instance.objects.filter(series__study=study).values_list("size_bytes", flat=True)
        )
    instances = Instance.objects.all()
    assert {i.source for i in instances} == {"demo:make_demo_data"}
    assert {(i.rows, i.columns) for i in instances} == {(32, 32)}
    assert len(stored_files(dicom_storage)) == len(instances)
    for instance in instances:
        blob = (dicom_storage / instance.blob_key).read_bytes()
        assert hashlib.sha256(blob).hexdigest() == instance.sha256
        assert len(blob) == instance.size_bytes


def test_running_it_again_adds_nothing_and_says_so(dicom_storage):
    _make()
    counts = (Patient.objects.count(), Study.objects.count(), Instance.objects.count(),
              User.objects.count(), AccessGrant.objects.count())
    files = len(stored_files(dicom_storage))

    output = _make()
    assert "already present" in output and "nothing added" in output
    assert counts == (Patient.objects.count(), Study.objects.count(),
                      Instance.objects.count(), User.objects.count(),
                      AccessGrant.objects.count())
    assert len(stored_files(dicom_storage)) == files


def test_an_interrupted_run_is_completed_by_the_next_without_duplicates(dicom_storage):
    handled = 0

    def stop_midway(n: int) -> None:
        nonlocal handled
        handled += n
        if handled == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        demo.make_demo_data(demo.Options(slices=2, size=32), progress=stop_midway)
    assert Instance.objects.count() == 7

    output = _make()
    assert "1 resumed" in output
    assert Instance.objects.count() == 2 * len(demo.PATIENTS) * 2 * 2
    assert set(Study.objects.values_list("num_instances", flat=True)) == {4}
    assert len(stored_files(dicom_storage)) == Instance.objects.count()


def test_demo_users_are_printed_and_sign_in_and_the_patient_sees_her_own_record():
    output = _make()
    logins = _logins(output)
    assert logins.keys() == {demo.DOCTOR.username, demo.TECHNICIAN.username,
                             demo.PATIENT_USER.username}
    for username, (role, password) in logins.items():
        user = User.objects.get(username=username)
        assert user.role == role
        assert _signs_in(username, password)
    ana = User.objects.get(username=demo.PATIENT_USER.username)
    assert ana.role == Role.PATIENT
    assert list(Patient.objects.filter(user=ana).values_list("patient_id", flat=True)) == [
        demo.PORTAL_PATIENT_ID
    ]
    doctor = User.objects.get(username=demo.DOCTOR.username)
    granted = set(AccessGrant.objects.filter(doctor=doctor).values_list(
        "patient__patient_id", flat=True))
    assert granted == {p.spec.patient_id for p in demo.PATIENTS} - {demo.NO_GRANT_PATIENT_ID}


def test_demo_login_prints_a_working_admin_login_with_a_new_password_each_run():
    out = io.StringIO()
    call_command("demo_login", stdout=out)
    match = re.search(r"http://127\.0\.0\.1:(\d+)/ as admin with password (\S+)",
                      out.getvalue())
    assert match is not None
    first = match.group(2)
    admin = User.objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff and admin.role == Role.ADMIN
    assert _signs_in("admin", first)

    out = io.StringIO()
    call_command("demo_login", port="8123", stdout=out)
    second = out.getvalue().split()[-1]
    assert "http://127.0.0.1:8123/" in out.getvalue()
    assert second != first
    assert User.objects.filter(username="admin").count() == 1
    assert _signs_in("admin", second)
    assert not _signs_in("admin", first)
