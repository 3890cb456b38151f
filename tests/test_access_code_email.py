"""Access codes by email: with one patient selected, reception may also send the code to an
address. The message says, in plain words, what the code is for, where to type it, that the
birth date is needed too, when it expires, and that the clinic never asks for it by phone.
The send is audited with the address and never the code; the birth date is never sent."""

from __future__ import annotations

import datetime
import re
import socket

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone, translation

from audit.models import AuditAction, AuditEvent, Outcome
from audit.trail import Actor
from imaging.models import Patient
from patients import codes
from patients.models import AccessCode

from .conftest import archived_record

PORTAL = "https://portal.example.org/patient/"


@pytest.fixture
def paulas_record(db, ct_study) -> Patient:
    return archived_record(ct_study, "PAULA-001")


@pytest.fixture
def charlies_record(db, other_study) -> Patient:
    return archived_record(other_study, "CHARLIE-002")


def _sent_events() -> list[AuditEvent]:
    return [e for e in AuditEvent.objects.filter(action=AuditAction.SHARE).order_by("seq")
            if e.detail.get("sent") == "access code by email"]


def _send(tina, patient: Patient, language: str = "en"):
    access, code = codes.issue_code(patient, tina)
    codes.send_code(patient, code, "paula@example.org", PORTAL, access.expires,
                    actor=Actor.for_user(tina), language=language)
    return access, code


def test_the_message_tells_the_patient_everything_needed_to_use_the_code(tina, paulas_record):
    access, code = _send(tina, paulas_record)
    [message] = mail.outbox
    assert message.to == ["paula@example.org"]
    assert message.subject == "Your access code to see your exams"
    body = message.body
    assert "Hello, Paula Pereira." in body
    assert "see and download the images of your exams" in body
    assert PORTAL in body and code in body
    assert "birth date" in body
    assert timezone.localtime(access.expires).strftime("%Y") in body  # when it expires
    assert "never ask you for it by phone" in body
    assert "&amp;" not in body and "&#x27;" not in body  # plain text, not HTML-escaped


def test_the_message_never_contains_the_birth_date(tina, paulas_record):
    _send(tina, paulas_record)
    body = mail.outbox[0].body
    assert "1975" not in body and "12/04" not in body and "04/12" not in body


def test_the_message_is_in_the_language_in_use_unless_one_is_given(tina, paulas_record):
    with translation.override("pt-br"):  # the language of the desk's page
        _send(tina, paulas_record, language="")
    message = mail.outbox[0]
    assert message.subject == "Seu código de acesso para ver seus exames"
    assert "data de nascimento" in message.body and "telefone" in message.body


def test_the_message_can_be_in_spanish(tina, paulas_record):
    _send(tina, paulas_record, language="es")
    assert "fecha de nacimiento" in mail.outbox[0].body


def test_the_send_is_audited_with_the_address_and_never_the_code(tina, paulas_record):
    _, code = _send(tina, paulas_record)
    [event] = _sent_events()
    assert event.outcome == Outcome.ALLOWED and event.username == "tina"
    assert event.patient_pk == paulas_record.pk
    assert event.detail == {"sent": "access code by email", "sent_to": "paula@example.org"}
    plain = code.replace("-", "")
    for logged in AuditEvent.objects.all():
        assert code not in str(logged.detail) and plain not in str(logged.detail)


def test_a_failed_send_is_audited_and_reported(settings, tina, paulas_record):
    with socket.socket() as probe:  # a port nobody listens on: the connection is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", port, 2
    with pytest.raises(codes.CodeNotSent):
        _send(tina, paulas_record)
    [event] = _sent_events()
    assert event.outcome == Outcome.FAILED


# --- From the admin ---------------------------------------------------------------------------


ISSUE = "admin:patients_accesscode_issue"


def test_alice_issues_a_code_and_sends_it_to_paula(client, alice, paulas_record):
    client.force_login(alice)
    confirm = client.get(reverse(ISSUE), {"patients": str(paulas_record.pk)})
    assert 'name="email"' in confirm.content.decode()

    receipt = client.post(reverse(ISSUE), {"patients": str(paulas_record.pk), "days": "7",
                                           "email": " paula@example.org "})
    assert receipt.status_code == 200
    page = receipt.content.decode()
    printed = re.search(r"<p class=\"code\" data-code>([A-Z0-9-]+)</p>", page)
    assert printed and 'id="email-sent"' in page
    [message] = mail.outbox
    assert message.to == ["paula@example.org"]
    assert printed.group(1) in message.body
    assert "http://testserver/patient/" in message.body
    access = AccessCode.objects.get()
    assert datetime.timedelta(days=6) < access.expires - timezone.now() <= \
        datetime.timedelta(days=7)
    assert [e.username for e in _sent_events()] == ["alice"]


def test_no_address_means_no_email(client, alice, paulas_record):
    client.force_login(alice)
    client.post(reverse(ISSUE), {"patients": str(paulas_record.pk), "days": "7"})
    assert AccessCode.objects.count() == 1
    assert mail.outbox == [] and _sent_events() == []


def test_a_malformed_address_issues_nothing_and_says_why(client, alice, paulas_record):
    client.force_login(alice)
    response = client.post(reverse(ISSUE), {"patients": str(paulas_record.pk), "days": "7",
                                            "email": "paula at example"},
                           HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 200
    assert "Enter a valid email address" in response.content.decode()
    assert not AccessCode.objects.exists() and mail.outbox == []


def test_the_email_field_is_offered_only_for_one_patient(client, alice, paulas_record,
                                                         charlies_record):
    client.force_login(alice)
    both = f"{paulas_record.pk},{charlies_record.pk}"
    assert 'name="email"' not in client.get(reverse(ISSUE), {"patients": both}
                                            ).content.decode()
    response = client.post(reverse(ISSUE), {"patients": both, "email": "paula@example.org"})
    assert response.status_code == 200 and response.context["error"]
    assert not AccessCode.objects.exists() and mail.outbox == []


def test_a_failed_send_still_shows_the_receipt_and_says_so(client, settings, alice,
                                                           paulas_record):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", port, 2
    client.force_login(alice)
    receipt = client.post(reverse(ISSUE), {"patients": str(paulas_record.pk),
                                           "email": "paula@example.org"})
    page = receipt.content.decode()
    assert 'id="email-not-sent"' in page and "data-code" in page
