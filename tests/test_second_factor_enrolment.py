"""Enrolling a second factor needs more than the password.

A never-enrolled staff account enrols its phone only with a one-time link an admin issues
(shown once, audited, expiring) or after setting its password through a reset link sent to
its e-mail. The TOTP secret is shown once; admins never read TOTP keys.
"""

from __future__ import annotations

import io
import re
import time

import pytest
from django.core import mail
from django.core.management import call_command
from django.test import Client
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User
from audit.models import AuditAction, AuditEvent

from .conftest import PASSWORD

pytestmark = pytest.mark.two_factor

LINK = re.compile(r"http://testserver(/accounts/enrol/[^<\s]+/)")


def _code(device: TOTPDevice) -> str:
    return f"{totp(device.bin_key, device.step, device.t0, device.digits, device.drift):06d}"


def _login(client: Client, username: str, password: str = PASSWORD):
    return client.post("/accounts/login/", {"username": username, "password": password})


@pytest.fixture
def admin_client(alice: User) -> Client:
    """alice, the clinic admin, signed in with her password and her phone's code."""
    device = TOTPDevice.objects.create(user=alice, name="phone", confirmed=True)
    client = Client()
    assert _login(client, "alice").status_code == 302
    assert client.post("/accounts/2fa/", {"token": _code(device)}).status_code == 302
    return client


def issue_link(admin_client: Client, user: User) -> str:
    """The enrolment link as alice gets it: the action on the users list in admin."""
    page = admin_client.post("/admin/accounts/user/", {
        "action": "issue_enrolment_link", "_selected_action": [user.pk]})
    assert page.status_code == 200
    found = LINK.search(page.content.decode())
    assert found, page.content.decode()
    return found.group(1)


def test_a_never_enrolled_doctor_with_only_a_password_is_told_to_ask_an_admin(dora):
    client = Client()
    assert _login(client, "dora").status_code == 302
    assert client.get("/imaging/")["Location"].startswith("/accounts/2fa/")
    page = client.get("/accounts/2fa/", HTTP_ACCEPT_LANGUAGE="en")
    assert page.status_code == 403
    assert "Ask an administrator for an enrolment link" in page.content.decode()
    assert b"<svg" not in page.content and b"totp-secret" not in page.content
    assert not TOTPDevice.objects.filter(user=dora).exists()
    assert client.post("/accounts/2fa/", {"token": "123456"}).status_code == 403
    assert client.get("/imaging/").status_code == 302
    assert client.get("/dicomweb/studies").status_code == 403


def test_an_admin_issues_an_enrolment_link_in_admin_and_it_is_audited(admin_client, alice,
                                                                      dora):
    link = issue_link(admin_client, dora)
    assert link.startswith("/accounts/enrol/")
    event = AuditEvent.objects.filter(action=AuditAction.LOGIN).order_by("seq").last()
    assert event is not None
    assert event.detail["step"] == "issue_enrolment" and event.detail["user"] == dora.pk
    assert event.username == "alice"
    assert link.split("/")[3] not in str(event.detail)  # the link itself is never stored


def test_with_the_link_the_doctor_enrols_her_phone_and_reaches_patient_data(admin_client,
                                                                            dora):
    link = issue_link(admin_client, dora)
    client = Client()
    assert "dora" in client.get(link).content.decode()  # asks to continue
    opened = client.post(link)
    assert opened.status_code == 302 and opened["Location"].startswith("/accounts/login/")
    assert _login(client, "dora").status_code == 302
    page = client.get("/accounts/2fa/?next=/imaging/")
    assert page.status_code == 200 and b"<svg" in page.content
    device = TOTPDevice.objects.get(user=dora, confirmed=False)
    done = client.post("/accounts/2fa/", {"token": _code(device), "next": "/imaging/"})
    assert done.status_code == 302 and done["Location"] == "/imaging/"
    assert client.get("/imaging/").status_code == 200


def test_the_link_works_once(admin_client, dora):
    link = issue_link(admin_client, dora)
    assert Client().post(link).status_code == 302
    assert Client().get(link).status_code == 404
    assert Client().post(link).status_code == 404


def test_opening_the_link_without_continuing_does_not_spend_it(admin_client, dora):
    link = issue_link(admin_client, dora)
    for _ in range(2):  # a link preview, a mail scanner
        assert Client().get(link).status_code == 200
    assert Client().post(link).status_code == 302


def test_the_link_expires(admin_client, dora, settings, monkeypatch):
    settings.ENROLMENT_LINK_HOURS = 72
    link = issue_link(admin_client, dora)
    later = time.time() + 73 * 3600
    monkeypatch.setattr("django.core.signing.time.time", lambda: later)
    assert Client().get(link).status_code == 404
    assert Client().post(link).status_code == 404


def test_a_tampered_link_does_not_work(admin_client, dora):
    link = issue_link(admin_client, dora)
    assert Client().post(link[:-3] + "xx/").status_code == 404


def test_the_secret_is_shown_once_and_a_later_visit_shows_a_new_one(admin_client, dora):
    client = Client()
    client.post(issue_link(admin_client, dora))
    _login(client, "dora")
    first = client.get("/accounts/2fa/").context["secret"]
    first_device = TOTPDevice.objects.get(user=dora, confirmed=False)
    second_page = client.get("/accounts/2fa/")
    assert second_page.context["secret"] != first
    assert first not in second_page.content.decode()
    assert not TOTPDevice.objects.filter(pk=first_device.pk).exists()
    refused = client.post("/accounts/2fa/", {"token": _code(first_device)})
    assert refused.status_code == 200 and b"totp-secret" not in refused.content
    assert client.get("/imaging/").status_code == 302


def test_a_wrong_code_while_enrolling_keeps_the_scanned_key_but_does_not_show_it(admin_client,
                                                                                dora):
    client = Client()
    client.post(issue_link(admin_client, dora))
    _login(client, "dora")
    secret = client.get("/accounts/2fa/").context["secret"]
    device = TOTPDevice.objects.get(user=dora, confirmed=False)
    wrong = client.post("/accounts/2fa/", {"token": "000000"})
    assert wrong.status_code == 200 and secret not in wrong.content.decode()
    time.sleep(1.1)  # django-otp throttles the attempt right after a wrong code
    assert client.post("/accounts/2fa/", {"token": _code(device)}).status_code == 302


def test_a_password_set_through_a_reset_link_allows_enrolment_in_that_session(dora):
    client = Client()
    client.post("/accounts/password-reset/", {"email": "dora@example.org"})
    assert len(mail.outbox) == 1
    reset = re.search(r"http://testserver(/accounts/reset/\S+/)", str(mail.outbox[0].body))
    assert reset
    form = client.get(reset.group(1), follow=True)
    new_password = "a brand new passphrase 42"
    done = client.post(form.redirect_chain[-1][0], {
        "new_password1": new_password, "new_password2": new_password})
    assert done.status_code == 302 and done["Location"] == "/accounts/2fa/"
    page = client.get("/accounts/2fa/")
    assert page.status_code == 200 and b"<svg" in page.content
    # Another session that signs in with the new password still may not enrol.
    other = Client()
    _login(other, "dora", new_password)
    assert other.get("/accounts/2fa/").status_code == 403


def test_a_reset_does_not_let_an_enrolled_account_set_up_another_phone(dora):
    TOTPDevice.objects.create(user=dora, name="phone", confirmed=True)
    client = Client()
    client.post("/accounts/password-reset/", {"email": "dora@example.org"})
    reset = re.search(r"http://testserver(/accounts/reset/\S+/)", str(mail.outbox[0].body))
    assert reset
    form = client.get(reset.group(1), follow=True)
    client.post(form.redirect_chain[-1][0], {
        "new_password1": "a brand new passphrase 42",
        "new_password2": "a brand new passphrase 42"})
    page = client.get("/accounts/2fa/")
    assert b"<svg" not in page.content and page.context["enrolling"] is False


def test_no_link_is_issued_for_an_account_that_has_a_second_factor(admin_client, dora):
    TOTPDevice.objects.create(user=dora, name="phone", confirmed=True)
    page = admin_client.post("/admin/accounts/user/", {
        "action": "issue_enrolment_link", "_selected_action": [dora.pk]})
    assert LINK.search(page.content.decode()) is None
    assert "dora" in page.content.decode()


def test_a_link_opened_in_someone_elses_session_signs_them_out(admin_client, dora, tina):
    link = issue_link(admin_client, dora)
    client = Client()
    _login(client, "tina")
    assert client.post(link)["Location"].startswith("/accounts/login/")
    assert "_auth_user_id" not in client.session


def test_admins_cannot_read_totp_keys_in_admin(admin_client, dora):
    device = TOTPDevice.objects.create(user=dora, name="phone", confirmed=True)
    change = admin_client.get(f"/admin/otp_totp/totpdevice/{device.pk}/change/")
    assert change.status_code == 200
    assert device.key not in change.content.decode()
    listing = admin_client.get("/admin/otp_totp/totpdevice/")
    assert listing.status_code == 200 and device.key not in listing.content.decode()
    for view in ("config", "qrcode"):
        shown = admin_client.get(f"/admin/otp_totp/totpdevice/{device.pk}/{view}/")
        assert shown.status_code in (403, 404) and device.key not in shown.content.decode()
    assert admin_client.get("/admin/otp_totp/totpdevice/add/").status_code == 403


def test_a_fresh_demo_admin_gets_in_with_the_printed_link_and_password(db):
    out = io.StringIO()
    call_command("demo_login", stdout=out)
    printed = out.getvalue()
    link = re.search(r"http://127\.0\.0\.1:\d+(/accounts/enrol/\S+/)", printed)
    password = re.search(r"as admin with password (\S+)", printed)
    assert link and password
    client = Client()
    client.post(link.group(1))
    assert _login(client, "admin", password.group(1)).status_code == 302
    client.get("/accounts/2fa/")
    device = TOTPDevice.objects.get(user__username="admin", confirmed=False)
    assert client.post("/accounts/2fa/", {"token": _code(device)}).status_code == 302
    assert client.get("/imaging/").status_code == 200


def test_the_password_reset_pages_are_reachable_from_the_login_page(client, db):
    login = client.get("/accounts/login/").content.decode()
    assert 'href="/accounts/password-reset/"' in login
    assert client.get("/accounts/password-reset/").status_code == 200
    sent = client.post("/accounts/password-reset/", {"email": "nobody@example.org"})
    assert sent.status_code == 302 and len(mail.outbox) == 0  # says nothing about accounts
    assert client.get(sent["Location"]).status_code == 200
