"""API tokens are lasting credentials: only a password sign-in mints one, every token
expires, each is on the trail when made and when revoked, and it dies with its account."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts import tokens
from accounts.models import ApiToken
from audit.models import AuditAction, AuditEvent, Outcome
from audit.trail import Actor
from imaging import policies
from imaging.principals import Principal


def test_a_token_expires_after_90_days_unless_asked_for_less(client, dora):
    client.force_login(dora)
    client.post("/accounts/tokens/", {"name": "workstation"})
    token = ApiToken.objects.get()
    days = (token.expires - timezone.now()) / datetime.timedelta(days=1)
    assert 89.9 < days <= 90


def test_a_token_lasts_at_most_a_year(client, dora):
    client.force_login(dora)
    response = client.post("/accounts/tokens/", {"name": "forever", "days": "5000"})
    assert not response.context["secret"] and not ApiToken.objects.exists()
    token, _secret = tokens.mint(Principal.for_user(dora), "script", days=5000,
                                 actor=Actor.for_user(dora))
    assert token.expires - timezone.now() <= datetime.timedelta(days=365)


def test_minting_and_revoking_a_token_are_on_the_trail(client, dora):
    client.force_login(dora)
    client.post("/accounts/tokens/", {"name": "workstation", "days": "30"})
    token = ApiToken.objects.get()
    made = AuditEvent.objects.get(action=AuditAction.TOKEN, detail__step="issued")
    assert made.outcome == Outcome.ALLOWED and made.username == "dora"
    assert made.detail["token"] == token.pk and made.detail["prefix"] == token.prefix
    client.post(f"/accounts/tokens/{token.pk}/revoke/")
    revoked = AuditEvent.objects.get(action=AuditAction.TOKEN, detail__step="revoked")
    assert revoked.username == "dora" and revoked.detail["token"] == token.pk


def test_a_deactivated_accounts_tokens_are_revoked(dora):
    token, _secret = ApiToken.issue(dora, "workstation")
    dora.is_active = False
    dora.save()
    token.refresh_from_db()
    assert token.revoked is not None and not token.active
    assert AuditEvent.objects.filter(action=AuditAction.TOKEN, detail__step="revoked",
                                     reason="account deactivated").exists()


def test_a_token_holder_cannot_mint_another_token(dora):
    token, _secret = ApiToken.issue(dora, "workstation")
    assert not policies.decide(Principal.for_token(dora, token.pk),
                               policies.Action.MINT_TOKEN)
    with pytest.raises(tokens.NotAllowed):
        tokens.mint(Principal.for_token(dora, token.pk), "another",
                    actor=Actor.for_user(dora))


def test_a_patient_needs_a_password_and_a_second_factor_for_a_token(client, paula):
    client.force_login(paula)
    assert client.post("/accounts/tokens/", {"name": "viewer"}).status_code == 403
    TOTPDevice.objects.create(user=paula, name="phone", confirmed=True)
    response = client.post("/accounts/tokens/", {"name": "viewer"})
    assert response.status_code == 200 and response.context["secret"]
