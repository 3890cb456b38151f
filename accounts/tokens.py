"""DICOMweb API tokens: minted, listed and revoked, each step on the audit trail.

A token is a lasting credential, so minting one is a decision of the policy
(:data:`imaging.policies.Action.MINT_TOKEN`): staff and patients who sign in with a password
and a second factor may, a receipt-code session and a token holder may not. Every token
expires (``API_TOKEN_DEFAULT_DAYS``, at most ``API_TOKEN_MAX_DAYS``), and an account's
tokens are revoked when the account is deactivated.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from audit import auth_events
from audit.models import AuditAction, Outcome
from audit.trail import Actor, record
from imaging import policies
from imaging.principals import Principal

from .models import ApiToken, User


class NotAllowed(PermissionDenied):
    """This caller may not mint tokens (the reason is in the audit trail and the page)."""


def lifetime(days: int | None) -> datetime.timedelta:
    """``days`` (default ``API_TOKEN_DEFAULT_DAYS``) bounded to 1..``API_TOKEN_MAX_DAYS``."""
    wanted = settings.API_TOKEN_DEFAULT_DAYS if days is None else days
    return datetime.timedelta(days=max(1, min(int(wanted), settings.API_TOKEN_MAX_DAYS)))


def mint(principal: Principal, name: str, *, days: int | None = None, actor: Actor
         ) -> tuple[ApiToken, str]:
    """A new token for the principal's account and its secret (shown once)."""
    decision = policies.decide(principal, policies.Action.MINT_TOKEN)
    if not decision or principal.user is None:
        detail: dict[str, Any] = {"step": "issued", "name": name[:100]}
        record(AuditAction.TOKEN, actor, None, Outcome.DENIED, reason=decision.why,
               detail=detail)
        raise NotAllowed(decision.why)
    token, secret = ApiToken.issue(principal.user, name,
                                   expires=timezone.now() + lifetime(days))
    auth_events.token_changed(actor, token, "issued")
    return token, secret


def revoke(token: ApiToken, *, actor: Actor, why: str = "revoked by its owner") -> bool:
    """Stop ``token`` now; True if this call revoked it."""
    changed = ApiToken.objects.filter(pk=token.pk, revoked__isnull=True).update(
        revoked=timezone.now())
    if changed:
        auth_events.token_changed(actor, token, "revoked", reason=why)
    return bool(changed)


def revoke_all_of(user: User, *, why: str) -> int:
    """Revoke every active token of ``user`` (the account was deactivated)."""
    count = 0
    for token in ApiToken.objects.filter(user=user, revoked__isnull=True):
        count += revoke(token, actor=Actor.system("accounts"), why=why)
    return count


def on_user_saved(sender: Any, instance: User, **kwargs: Any) -> None:
    """A deactivated account's tokens stop with it."""
    if not instance.is_active:
        revoke_all_of(instance, why="account deactivated")
