"""A receipt-code session opens one patient's exams, for as long as the code does, and
nothing that outlives it.

paula has no password: she signs in with the code tina printed on her receipt. Her account
also holds an older record (another patient ID, linked at the reception), which a session
opened with this code must not reach, on any page or protocol.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import ApiToken, Role, User
from audit.models import AuditAction, AuditEvent, Outcome
from imaging.models import Patient, Study
from imaging.synthetic import PatientSpec, SeriesSpec, write_study
from patients import codes
from patients.models import AccessCode
from sharing.models import DownloadLink

from .conftest import archived_record, story_clinic

BIRTH = "1975-04-12"
OLD = PatientSpec("PAULA-OLD-7", "Pereira^Paula", datetime.date(1975, 4, 12), "F")


@pytest.fixture(scope="module")
def old_study(tmp_path_factory) -> tuple[str, list[Path]]:
    folder = tmp_path_factory.mktemp("old-record")
    return write_study(folder, OLD, [SeriesSpec("CR", 1, size=64)],
                       study_date=datetime.date(2019, 5, 6), accession="ACC-OLD-1",
                       description="RX tórax antigo")


@pytest.fixture
def records(db, ct_study, old_study) -> tuple[Patient, Patient]:
    """paula's current record (the code's) and her older one, not yet on any account."""
    return archived_record(ct_study, "PAULA-001"), archived_record(old_study, OLD.patient_id)


@pytest.fixture
def issued(tina, records) -> tuple[AccessCode, str]:
    return codes.issue_code(records[0], tina)


@pytest.fixture
def session(client: Client, issued, records) -> Client:
    """paula signed in with her code; then the reception links her old record to the same
    account (as happens when two registrations of one person are merged)."""
    _access, code = issued
    assert client.post("/patient/", {"code": code, "birth_date": BIRTH}).status_code == 302
    current, old = records
    current.refresh_from_db()
    Patient.objects.filter(pk=old.pk).update(user=current.user)
    return client


def uids(response) -> list[str]:
    return [s["0020000D"]["Value"][0] for s in json.loads(response.content or b"[]")]


def test_a_code_session_sees_only_the_codes_patient_on_the_staff_study_list(session,
                                                                             records):
    page = session.get("/imaging/", follow=True).content.decode()
    assert "ACC-OLD-1" not in page and "RX tórax antigo" not in page


def test_a_code_session_sees_only_the_codes_patient_in_dicomweb(session, ct_study,
                                                                old_study):
    found = uids(session.get("/dicomweb/studies"))
    assert found == [ct_study[0]]
    response = session.get(f"/dicomweb/studies/{old_study[0]}/metadata")
    assert response.status_code == 404
    assert AuditEvent.objects.filter(study_uid=old_study[0], outcome=Outcome.DENIED).exists()


def test_a_code_session_sees_only_the_codes_patient_in_the_portal_and_privacy_pages(
        session, records):
    current, old = records
    exams = session.get("/patient/exams/").content.decode()
    assert "RX tórax antigo" not in exams
    privacy = session.get("/privacy/").content.decode()
    assert OLD.patient_id not in privacy
    refused = session.post(reverse("privacy:export_request"), {"patient": str(old.pk)})
    assert refused.status_code == 404
    allowed = session.post(reverse("privacy:export_request"), {"patient": str(current.pk)})
    assert allowed.status_code == 302


def test_a_code_session_cannot_share_the_other_record(session, old_study):
    response = session.post("/sharing/links/new/", {"study": old_study[0], "days": "7",
                                                    "max_uses": "3"})
    assert response.status_code == 404
    assert not DownloadLink.objects.exists()


def test_a_code_session_cannot_mint_an_api_token(session):
    page = session.get("/accounts/tokens/")
    assert page.status_code == 200 and not page.context["may_mint"]
    response = session.post("/accounts/tokens/", {"name": "forever", "days": "365"})
    assert response.status_code == 403
    assert not ApiToken.objects.exists()
    refused = AuditEvent.objects.get(action=AuditAction.TOKEN, outcome=Outcome.DENIED,
                                     detail__step="issued")
    assert "password sign-in" in refused.reason


def test_a_revoked_code_ends_the_session_it_opened(session, issued, alice, ct_study):
    access, _code = issued
    assert uids(session.get("/dicomweb/studies")) == [ct_study[0]]
    codes.revoke_code(access, alice)
    assert session.get("/dicomweb/studies").status_code == 401  # signed out
    assert session.get(f"/dicomweb/studies/{ct_study[0]}/metadata").status_code == 401


def test_an_expired_code_ends_the_session_it_opened(session, issued, ct_study):
    access, _code = issued
    AccessCode.objects.filter(pk=access.pk).update(
        expires=timezone.now() - datetime.timedelta(seconds=1))
    assert session.get("/dicomweb/studies").status_code == 401


def test_a_link_made_in_a_code_session_ends_with_the_code(session, issued, alice, ct_study):
    access, _code = issued
    AccessCode.objects.filter(pk=access.pk).update(
        expires=timezone.now() + datetime.timedelta(days=2))
    response = session.post("/sharing/links/new/", {"study": ct_study[0], "days": "30",
                                                    "max_uses": "3"})
    assert response.status_code == 200
    link = DownloadLink.objects.get()
    access.refresh_from_db()
    assert link.access_code == access and link.expires <= access.expires
    token = response.context["url"].rsplit("/s/", 1)[1]
    outsider = Client()
    assert outsider.get(f"/s/{token}").status_code == 200
    codes.revoke_code(access, alice)
    link.refresh_from_db()
    assert link.revoked is not None
    assert outsider.get(f"/s/{token}").status_code == 410


def test_a_link_made_in_a_code_session_stops_when_the_code_expires(session, issued,
                                                                    ct_study):
    access, _code = issued
    response = session.post("/sharing/links/new/", {"study": ct_study[0], "days": "7",
                                                    "max_uses": "3"})
    token = response.context["url"].rsplit("/s/", 1)[1]
    AccessCode.objects.filter(pk=access.pk).update(
        expires=timezone.now() - datetime.timedelta(seconds=1))
    refused = Client().get(f"/s/{token}")
    assert refused.status_code == 410 and refused.context["reason"] in ("expired",
                                                                          "withdrawn")


def test_the_person_who_issued_a_code_cannot_sign_in_with_it(client, tina, records):
    _access, code = codes.issue_code(records[0], tina)
    client.force_login(tina)
    response = client.post("/patient/", {"code": code, "birth_date": BIRTH})
    assert response.status_code == 403 and response.context["refusal"] == "own_code"
    assert AuditEvent.objects.filter(action=AuditAction.LOGIN, outcome=Outcome.DENIED,
                                     reason__contains="issued the code").exists()
    assert client.get("/imaging/", follow=True).context["user"] == tina  # still herself


def test_a_technician_issues_codes_only_for_her_clinics_patients(client, tina, records,
                                                                 db):
    from accounts.models import Clinic

    elsewhere = Patient.objects.create(patient_id="NORTE-9", name="Souza^Nina",
                                       clinic=Clinic.objects.create(name="Clínica Norte"))
    with pytest.raises(codes.NotAllowed):
        codes.issue_code(elsewhere, tina)
    assert AuditEvent.objects.filter(action=AuditAction.SHARE, outcome=Outcome.DENIED,
                                     patient_pk=elsewhere.pk).exists()
    tina.is_staff = True
    tina.save()
    from django.contrib.auth.models import Permission

    tina.user_permissions.add(*Permission.objects.filter(
        content_type__app_label__in=("imaging", "patients")))
    client.force_login(tina)
    page = client.get(f"/admin/patients/accesscode/issue/?patients={elsewhere.pk}")
    assert page.status_code == 403 and b"Souza" not in page.content
    listing = client.get("/admin/imaging/patient/").content.decode()
    assert "Souza" not in listing and "Pereira" in listing
    mine = client.get(f"/admin/patients/accesscode/issue/?patients={records[0].pk}")
    assert mine.status_code == 200 and b"Pereira" in mine.content


def test_issuing_a_code_is_on_the_trail(tina, records):
    access, _code = codes.issue_code(records[0], tina)
    entry = AuditEvent.objects.get(action=AuditAction.SHARE, detail__step="issue_access_code",
                                   outcome=Outcome.ALLOWED)
    assert entry.username == "tina" and entry.detail["code"] == access.pk


def test_patient_accounts_made_for_codes_have_no_password(session, records):
    current, _old = records
    current.refresh_from_db()
    user = User.objects.get(pk=current.user_id)
    assert user.role == Role.PATIENT and not user.has_usable_password()
    assert story_clinic().pk == current.clinic_id
    assert Study.objects.filter(patient=current).exists()


def test_a_revoked_codes_session_is_signed_out(session, issued, alice):
    access, _code = issued
    assert session.get("/patient/exams/").status_code == 200
    codes.revoke_code(access, alice)
    response = session.get("/patient/exams/")
    assert response.status_code == 302 and response["Location"].startswith("/patient/")
    assert "_auth_user_id" not in session.session
