"""Signing in with an email address instead of a username: patients remember the address
they gave the clinic. Lockout counts against the account, whichever name was typed."""

from __future__ import annotations

from django.test import Client

from accounts.models import Role, User

from .conftest import PASSWORD


def _login(client: Client, username: str, password: str = PASSWORD):
    return client.post("/accounts/login/", {"username": username, "password": password})


def _signed_in_as(client: Client) -> User | None:
    user_id = client.session.get("_auth_user_id")
    return User.objects.get(pk=user_id) if user_id else None


def test_paula_signs_in_with_her_email_and_password(paula):
    client = Client()
    assert _login(client, "paula@example.org").status_code == 302
    assert _signed_in_as(client) == paula


def test_the_email_is_matched_whatever_its_case(paula):
    client = Client()
    assert _login(client, "  Paula@EXAMPLE.org").status_code == 302
    assert _signed_in_as(client) == paula


def test_the_username_still_works(paula):
    client = Client()
    assert _login(client, "paula").status_code == 302
    assert _signed_in_as(client) == paula


def test_a_wrong_password_with_the_email_is_refused(paula):
    client = Client()
    assert _login(client, "paula@example.org", "not her password").status_code == 200
    assert _signed_in_as(client) is None


def test_an_email_shared_by_two_active_accounts_signs_in_neither(paula, charlie):
    User.objects.filter(pk=charlie.pk).update(email="PAULA@example.org")
    client = Client()
    assert _login(client, "paula@example.org").status_code == 200
    assert _signed_in_as(client) is None
    assert _login(client, "paula").status_code == 302  # her username is unambiguous


def test_an_inactive_account_with_the_same_email_does_not_get_in_the_way(paula, charlie):
    User.objects.filter(pk=charlie.pk).update(email="paula@example.org", is_active=False)
    client = Client()
    assert _login(client, "paula@example.org").status_code == 302
    assert _signed_in_as(client) == paula


def test_an_inactive_account_cannot_sign_in_by_email(paula):
    User.objects.filter(pk=paula.pk).update(is_active=False)
    client = Client()
    assert _login(client, "paula@example.org").status_code == 200
    assert _signed_in_as(client) is None


def test_a_username_that_looks_like_an_email_wins_over_another_accounts_email(paula):
    other = User.objects.create_user(username="paula@example.org", password="another pass "
                                     "phrase here", role=Role.PATIENT)
    client = Client()
    assert _login(client, "paula@example.org", "another pass phrase here").status_code == 302
    assert _signed_in_as(client) == other
    client = Client()
    assert _login(client, "paula@example.org").status_code == 200  # paula's password


def test_five_wrong_passwords_by_email_lock_the_account_even_for_the_right_password(paula):
    client = Client()
    for _ in range(4):
        assert _login(client, "paula@example.org", "wrong password").status_code == 200
    assert _login(client, "Paula@Example.org", "wrong password").status_code == 429
    assert _login(client, "paula@example.org").status_code == 429
    assert _login(Client(REMOTE_ADDR="203.0.113.9"), "paula").status_code == 429
    assert _signed_in_as(client) is None


def test_lockout_counts_failures_by_username_and_by_email_together(paula):
    client = Client(REMOTE_ADDR="203.0.113.10")
    for typed in ("paula", "paula@example.org", "PAULA@example.org", "paula"):
        assert _login(client, typed, "wrong password").status_code == 200
    other_address = Client(REMOTE_ADDR="203.0.113.11")
    assert _login(other_address, "paula@example.org", "wrong password").status_code == 429
    assert _login(other_address, "paula").status_code == 429


def test_the_login_form_asks_for_a_username_or_email(client):
    page = client.get("/accounts/login/", HTTP_ACCEPT_LANGUAGE="en")
    assert "Username or email" in page.content.decode()
