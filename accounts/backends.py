"""Sign in with a username or an email address.

Patients remember the address they gave the clinic, not a username made up for them. The
email is accepted only when exactly one active account has it (case-insensitive); with none
or several the attempt fails like a wrong username, so an address shared by two accounts
never picks one of them. An exact username always wins over an email lookup.

django-axes counts failures per *account*, whichever identifier was typed
(:func:`lockout_username`), so switching between username and email, or changing the
case of the address, does not buy more guesses.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.backends import ModelBackend
from django.http import HttpRequest

from .models import User


def username_for(identifier: str) -> str | None:
    """The username of the one active account that ``identifier`` names as an email."""
    if "@" not in identifier or User.objects.filter(username=identifier).exists():
        return None
    found = list(User.objects.filter(email__iexact=identifier.strip(), is_active=True)
                 .values_list("username", flat=True)[:2])
    return found[0] if len(found) == 1 else None


class EmailOrUsernameBackend(ModelBackend):
    def authenticate(self, request: HttpRequest | None, username: str | None = None,
                     password: str | None = None, **kwargs: Any) -> User | None:
        username = username or kwargs.pop(User.USERNAME_FIELD, None)
        if username:
            username = username_for(username) or username
        # One password hash whichever way the account was named (ModelBackend also hashes
        # for unknown names), so timing does not tell which emails have accounts.
        return super().authenticate(request, username=username, password=password, **kwargs)

    async def aauthenticate(self, request: HttpRequest | None, username: str | None = None,
                            password: str | None = None, **kwargs: Any) -> User | None:
        username = username or kwargs.pop(User.USERNAME_FIELD, None)
        if username:
            username = await sync_to_async(username_for)(username) or username
        return await super().aauthenticate(request, username=username, password=password,
                                           **kwargs)


def lockout_username(request: HttpRequest | None, credentials: dict[str, Any] | None
                     ) -> str | None:
    """AXES_USERNAME_CALLABLE: the account's username for an email, so lockout is per account.

    Unknown or ambiguous emails are lower-cased, so case variants share one counter too.
    """
    typed: str | None = (credentials or {}).get("username")
    if typed is None and request is not None:
        typed = request.POST.get("username")
    if not typed:
        return typed
    resolved = username_for(typed)
    if resolved is not None:
        return resolved
    return typed.strip().lower() if "@" in typed else typed
