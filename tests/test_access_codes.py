"""Receipt access codes: the clinic prints a long random code on the exam receipt; with it
and their birth date a patient signs in to their own exams, and to nothing else.

Codes are single-patient, expire, can be revoked, are stored only as a hash, and guessing
is rate-limited. A wrong code and a wrong birth date look the same; every attempt is on the
audit trail.
"""

from __future__ import annotations

import datetime
import hashlib
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import Role, User
from audit.models import AuditAction, AuditEvent, Outcome
from imaging.models import Patient
from patients import codes
from patients.models import ALPHABET, AccessCode

from .conftest import archived_record

PAULA_BIRTH = "1975-04-12"
LOGIN = "/patient/"
CODE = re.compile(rf"^[{ALPHABET}]{{4}}(-[{ALPHABET}]{{4}}){{4}}$")






@pytest.fixture
def paulas_record(db, ct_study) -> Patient:
    """paula's record as the clinic has it: exams, no portal account yet."""
    return archived_record(ct_study, "PAULA-001")


@pytest.fixture
def charlies_record(db, other_study) -> Patient:
    return archived_record(other_study, "CHARLIE-002")


def logins(outcome: str | None = None) -> list[AuditEvent]:
    found = AuditEvent.objects.filter(action=AuditAction.LOGIN).order_by("seq")
    return list(found.filter(outcome=outcome) if outcome else found)


def sign_in(client, code: str, birth_date: str = PAULA_BIRTH, **extra):
    return client.post(LOGIN, {"code": code, "birth_date": birth_date}, **extra)


def alert(response) -> str:
    match = re.search(r'<div class="error" role="alert"[^>]*>(.*?)</div>',
                      response.content.decode(), re.S)
    return " ".join(match.group(1).split()) if match else ""


# --- Issuing ---------------------------------------------------------------------------------


def test_a_code_is_long_random_grouped_for_printing_and_stored_only_as_its_hash(
        tina, paulas_record):
    access, code = codes.issue_code(paulas_record, tina)
    assert CODE.match(code), code
    plain = code.replace("-", "")
    assert len(plain) == 20 and access.prefix == plain[:4]
    assert access.code_hash == hashlib.sha256(plain.encode()).hexdigest()
    stored = AccessCode.objects.filter(pk=access.pk).values().get()
    assert not any(plain in str(value) or code in str(value) for value in stored.values())
    assert access.expires - timezone.now() > datetime.timedelta(days=29)
    _, other = codes.issue_code(paulas_record, tina)
    assert other != code

    issued = AuditEvent.objects.filter(action=AuditAction.SHARE).order_by("seq").first()
    assert issued is not None and issued.outcome == Outcome.ALLOWED
    assert issued.detail["step"] == "issue_access_code"
    assert issued.patient_ref.startswith("PAULA-001") and issued.username == "tina"
    assert plain not in str(issued.detail)


def test_the_code_lifetime_is_configurable(settings, tina, paulas_record):
    settings.PATIENT_CODE_LIFETIME_DAYS = 3
    access, _code = codes.issue_code(paulas_record, tina)
    assert datetime.timedelta(days=2) < access.expires - timezone.now() <= \
        datetime.timedelta(days=3)


@pytest.mark.parametrize("persona", ["dora", "charlie"])
def test_doctors_and_patients_cannot_issue_codes(request, persona, paulas_record):
    user = request.getfixturevalue(persona)
    with pytest.raises(codes.NotAllowed):
        codes.issue_code(paulas_record, user)
    assert not AccessCode.objects.exists()
    refused = AuditEvent.objects.get(action=AuditAction.SHARE)
    assert refused.outcome == Outcome.DENIED and refused.patient_ref.startswith("PAULA-001")


# --- Redeeming -------------------------------------------------------------------------------


def test_paula_signs_in_with_her_code_and_birth_date_and_gets_a_patient_account(
        client, tina, paulas_record):
    access, code = codes.issue_code(paulas_record, tina)
    response = sign_in(client, code)
    assert response.status_code == 302 and response["Location"] == reverse("patients:exams")

    paulas_record.refresh_from_db()
    user = paulas_record.user
    assert user is not None and user.role == Role.PATIENT
    assert not user.has_usable_password() and not user.is_staff
    assert user.last_name == "Pereira" and user.first_name == "Paula"
    assert int(client.session["_auth_user_id"]) == user.pk
    assert client.session[codes.SESSION_PATIENT] == paulas_record.pk
    assert client.session.get_expiry_age() == codes.SESSION_SECONDS
    access.refresh_from_db()
    assert access.uses == 1 and access.last_used is not None

    [entry] = logins()
    assert entry.outcome == Outcome.ALLOWED and entry.user_pk == user.pk
    assert entry.patient_ref.startswith("PAULA-001") and entry.detail["method"] == "access_code"
    assert entry.detail["prefix"] == access.prefix


def test_the_code_may_be_typed_loosely_and_the_date_day_first(client, tina, paulas_record):
    _access, code = codes.issue_code(paulas_record, tina)
    loose = code.lower().replace("-", " ")
    assert sign_in(client, loose, "12/04/1975").status_code == 302


def test_a_second_sign_in_uses_the_same_account(client, tina, paulas_record):
    _access, code = codes.issue_code(paulas_record, tina)
    sign_in(client, code)
    client.logout()
    _again, second = codes.issue_code(paulas_record, tina)
    assert sign_in(client, second).status_code == 302
    assert User.objects.filter(role=Role.PATIENT).count() == 1


def test_a_wrong_birth_date_and_a_wrong_code_are_refused_alike(client, tina, paulas_record):
    access, code = codes.issue_code(paulas_record, tina)
    wrong_date = sign_in(client, code, "1975-04-13")
    wrong_code = sign_in(client, access.prefix + "-AAAA-BBBB-CCCC-DDDD")
    no_date = sign_in(client, code, "")
    for response in (wrong_date, wrong_code, no_date):
        assert response.status_code == 400
        assert response.context["refusal"] == "wrong"
        assert "_auth_user_id" not in client.session
    assert alert(wrong_date) == alert(wrong_code) == alert(no_date) != ""
    assert alert(wrong_date).startswith("O código ou a data de nascimento")  # pt-BR first

    refused = logins(Outcome.DENIED)
    assert [e.reason for e in refused] == [
        "wrong birth date", "unknown access code", "wrong birth date"]
    assert refused[0].patient_ref.startswith("PAULA-001") and refused[1].patient_ref == ""
    assert all(code.replace("-", "") not in str(e.detail) for e in refused)
    access.refresh_from_db()
    assert access.failures == 2
    paulas_record.refresh_from_db()
    assert paulas_record.user is None


def test_an_expired_code_is_refused(client, tina, paulas_record):
    access, code = codes.issue_code(paulas_record, tina)
    AccessCode.objects.filter(pk=access.pk).update(expires=timezone.now())
    response = sign_in(client, code)
    assert response.status_code == 410 and response.context["refusal"] == "expired"
    assert "_auth_user_id" not in client.session
    assert logins(Outcome.FAILED)[-1].reason == "access code expired"


def test_a_revoked_code_is_refused_and_the_revocation_is_audited(client, tina, paulas_record):
    access, code = codes.issue_code(paulas_record, tina)
    assert codes.revoke_code(access, tina) is True
    assert codes.revoke_code(access, tina) is False
    response = sign_in(client, code)
    assert response.status_code == 410 and response.context["refusal"] == "revoked"
    assert logins(Outcome.DENIED)[-1].reason == "access code revoked"
    revoked = [e for e in AuditEvent.objects.filter(action=AuditAction.SHARE)
               if e.detail.get("step") == "revoke_access_code"]
    assert len(revoked) == 1 and revoked[0].outcome == Outcome.ALLOWED


def test_an_expired_or_revoked_code_with_a_wrong_birth_date_says_only_wrong(
        client, tina, paulas_record):
    access, code = codes.issue_code(paulas_record, tina)
    codes.revoke_code(access, tina)
    assert sign_in(client, code, "2000-01-01").context["refusal"] == "wrong"


def test_a_code_stops_working_after_too_many_wrong_birth_dates(client, tina, paulas_record):
    access, code = codes.issue_code(paulas_record, tina)
    AccessCode.objects.filter(pk=access.pk).update(failures=codes.MAX_FAILURES)
    response = sign_in(client, code)
    assert response.status_code == 403 and response.context["refusal"] == "locked"
    assert "_auth_user_id" not in client.session


def test_a_code_never_opens_an_account_that_has_a_password(client, tina, paula,
                                                           paulas_record):
    Patient.objects.filter(pk=paulas_record.pk).update(user=paula)
    _access, code = codes.issue_code(paulas_record, tina)
    response = sign_in(client, code)
    assert response.status_code == 403 and response.context["refusal"] == "has_account"
    assert "_auth_user_id" not in client.session
    assert logins(Outcome.DENIED)[-1].reason == "record belongs to an account with a password"


def test_a_code_never_opens_a_staff_account(client, tina, alice, paulas_record):
    Patient.objects.filter(pk=paulas_record.pk).update(user=alice)
    alice.set_unusable_password()
    alice.save()
    _access, code = codes.issue_code(paulas_record, tina)
    assert sign_in(client, code).context["refusal"] == "has_account"
    assert "_auth_user_id" not in client.session


# --- Guessing --------------------------------------------------------------------------------


def test_guessing_codes_from_one_address_is_rate_limited(client, settings, tina,
                                                         paulas_record):
    settings.PATIENT_CODE_ADDRESS_LIMIT = 3
    _access, code = codes.issue_code(paulas_record, tina)
    for guess in ("AAAA", "BBBB", "CCCC"):
        assert sign_in(client, f"{guess}-2345-6789-ABCD-EFGH").status_code == 400
    blocked = sign_in(client, code)  # even the right code waits now
    assert blocked.status_code == 429 and blocked.context["refusal"] == "too_many"
    assert int(blocked["Retry-After"]) > 0
    assert "_auth_user_id" not in client.session
    assert logins(Outcome.DENIED)[-1].reason == "too many attempts"
    other_address = sign_in(client, code, REMOTE_ADDR="10.0.0.9")
    assert other_address.status_code == 302


def test_guessing_one_codes_birth_date_from_many_addresses_is_rate_limited(
        client, settings, tina, paulas_record):
    settings.PATIENT_CODE_PREFIX_LIMIT = 3
    _access, code = codes.issue_code(paulas_record, tina)
    for n in range(3):
        response = sign_in(client, code, f"1990-01-0{n + 1}", REMOTE_ADDR=f"10.0.1.{n}")
        assert response.status_code == 400
    assert sign_in(client, code, REMOTE_ADDR="10.0.1.99").status_code == 429


# --- The clinic's side: issue from the patient list, print the receipt ----------------------


def test_alice_issues_a_code_from_the_patient_list_and_prints_the_receipt(
        client, alice, paulas_record):
    client.force_login(alice)
    changelist = reverse("admin:imaging_patient_changelist")
    assert "issue_access_code" in client.get(changelist).content.decode()
    action = client.post(changelist, {"action": "issue_access_code",
                                      "_selected_action": [paulas_record.pk]})
    assert action.status_code == 302
    confirm = client.get(action["Location"])
    assert confirm.status_code == 200 and "Pereira^Paula" in confirm.content.decode()
    assert not AccessCode.objects.exists()  # nothing issued before the confirmation

    receipt = client.post(reverse("admin:patients_accesscode_issue"),
                          {"patients": str(paulas_record.pk), "days": "10"})
    assert receipt.status_code == 200
    page = receipt.content.decode()
    printed = re.search(r"<p class=\"code\" data-code>([A-Z0-9-]+)</p>", page)
    assert printed and CODE.match(printed.group(1))
    assert "http://testserver/patient/" in page and "Pereira Paula" in page
    assert "1975" not in page  # the birth date is the second factor: never on the receipt
    access = AccessCode.objects.get()
    assert access.created_by == alice
    assert datetime.timedelta(days=9) < access.expires - timezone.now() <= \
        datetime.timedelta(days=10)

    client.logout()
    assert sign_in(client, printed.group(1)).status_code == 302


def test_access_codes_are_revoked_from_the_admin(client, alice, tina, paulas_record):
    access, code = codes.issue_code(paulas_record, tina)
    client.force_login(alice)
    response = client.post(reverse("admin:patients_accesscode_changelist"),
                           {"action": "revoke", "_selected_action": [access.pk]})
    assert response.status_code == 302
    access.refresh_from_db()
    assert access.revoked is not None
    client.logout()
    assert sign_in(client, code).context["refusal"] == "revoked"
