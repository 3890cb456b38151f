"""Who is asking, with the scope they carry: the one input of :mod:`imaging.policies`.

A caller is never just "a user". The same account signed in with a password, through a
receipt code, or by a bearer token reaches different things; a DICOM peer is a machine
bound (or not) to one clinic. :class:`Principal` carries that difference so the policy,
not each view, decides.

- ``USER``: a portal account signed in with its password (and second factor).
- ``CODE``: a receipt-code session: narrowed to the code's patient, valid only while the
  code is (not revoked, not expired), and never able to mint lasting credentials.
- ``TOKEN``: a bearer-token holder: the token's user, who may not mint further tokens.
- ``PEER``: a DICOM node, known by AE title and address, with the services it may use.
- ``ANONYMOUS``: nobody; every decision says no.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django.http import HttpRequest

    from accounts.models import User


class Kind(enum.StrEnum):
    ANONYMOUS = "anonymous"
    USER = "user"
    CODE = "code"
    TOKEN = "token"  # noqa: S105 (a kind of caller)
    PEER = "peer"


@dataclass(frozen=True)
class PeerScope:
    """What the policy needs to know of a DICOM peer (built by ``dimse`` from its model)."""

    ae_title: str
    known: bool
    enabled: bool = True
    may_store: bool = False
    may_query: bool = False
    may_retrieve: bool = False
    clinic_id: int | None = None


@dataclass(frozen=True)
class Principal:
    kind: Kind
    user: User | None = field(default=None, compare=False)
    peer: PeerScope | None = None
    #: CODE: the access code and the one patient it opens.
    code_id: int | None = None
    patient_id: int | None = None
    #: TOKEN: the bearer token used.
    token_id: int | None = None

    # --- constructors -------------------------------------------------------------------

    @classmethod
    def anonymous(cls) -> Principal:
        return cls(Kind.ANONYMOUS)

    @classmethod
    def for_user(cls, user: Any) -> Principal:
        """A password sign-in (or a service acting for the account)."""
        if user is None or not user.is_authenticated or not user.is_active:
            return cls.anonymous()
        return cls(Kind.USER, user=user)

    @classmethod
    def for_token(cls, user: Any, token_id: int) -> Principal:
        if user is None or not user.is_active:
            return cls.anonymous()
        return cls(Kind.TOKEN, user=user, token_id=token_id)

    @classmethod
    def for_code(cls, user: Any, code_id: int | None) -> Principal:
        """A code session, checked now: a revoked or expired code opens nothing."""
        from patients.models import AccessCode  # patients builds on imaging

        if user is None or not user.is_active or code_id is None:
            return cls.anonymous()
        from django.utils import timezone

        code = (AccessCode.objects.filter(pk=code_id, revoked__isnull=True,
                                          expires__gt=timezone.now())
                .values_list("patient_id", flat=True).first())
        if code is None:
            return cls.anonymous()
        return cls(Kind.CODE, user=user, code_id=code_id, patient_id=code)

    @classmethod
    def for_peer(cls, peer: PeerScope) -> Principal:
        return cls(Kind.PEER, peer=peer)

    # --- what the policy reads ----------------------------------------------------------

    @property
    def user_id(self) -> int | None:
        return self.user.pk if self.user is not None else None

    @property
    def role(self) -> str:
        return str(getattr(self.user, "role", "")) if self.user is not None else ""

    @property
    def is_superuser(self) -> bool:
        """The platform-wide exception to clinic scoping (never for a code session)."""
        return bool(self.kind in (Kind.USER, Kind.TOKEN) and self.user is not None
                    and self.user.is_superuser)

    @cached_property
    def clinic_ids(self) -> frozenset[int] | None:
        """The clinics this principal acts within; None means every clinic."""
        if self.kind == Kind.PEER:
            assert self.peer is not None
            return None if self.peer.clinic_id is None else frozenset({self.peer.clinic_id})
        if self.is_superuser:
            return None
        if self.user is None or self.kind == Kind.CODE:
            return frozenset()
        return frozenset(self.user.clinics.values_list("pk", flat=True))

    def __str__(self) -> str:
        if self.kind == Kind.PEER and self.peer is not None:
            return f"peer {self.peer.ae_title}"
        if self.user is not None:
            return f"{self.kind} {self.user.get_username()}"
        return str(self.kind)


REQUEST_ATTRIBUTE = "_imaging_principal"


def of_request(request: HttpRequest) -> Principal:
    """The principal behind a web request, worked out once per request.

    DICOMweb's Basic and Bearer authentication set it explicitly (:func:`set_for_request`);
    otherwise it is the session's user, narrowed to a code's patient for a code sign-in.
    """
    found = getattr(request, REQUEST_ATTRIBUTE, None)
    if isinstance(found, Principal):
        return found
    user = getattr(request, "user", None)
    principal: Principal
    if user is None or not user.is_authenticated or not user.is_active:
        principal = Principal.anonymous()
    else:
        from patients.codes import session_code

        code_session = session_code(request)
        if code_session is not None:
            principal = Principal.for_code(user, code_session)
        else:
            principal = Principal.for_user(user)
    setattr(request, REQUEST_ATTRIBUTE, principal)
    return principal


def set_for_request(request: HttpRequest, principal: Principal) -> None:
    setattr(request, REQUEST_ATTRIBUTE, principal)


if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser

    Caller = Principal | User | AnonymousUser


def as_principal(caller: Caller | None) -> Principal:
    """A principal as is; an account as a password sign-in (services, admin, commands)."""
    if isinstance(caller, Principal):
        return caller
    return Principal.for_user(caller)
