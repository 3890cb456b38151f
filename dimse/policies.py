"""A DICOM peer as a principal of :mod:`imaging.policies`, which decides for it.

Peers are a principal of their own, not portal users: a peer has no role, no per-patient
grant and no second factor, and it cannot open a break-the-glass access with a reason.
What an admin decides about a peer is which node it is (AE title and host), which DIMSE
services it may use, and which clinic it belongs to. A peer bound to a clinic stores into,
finds and retrieves only that clinic's patients; an unbound peer (a first installation,
or an archive-wide router) sees the archive as a whole, as marked in admin. Every operation
is written to the same audit trail as the web's, under its AE title and address.
"""

from __future__ import annotations

from audit.models import AuditAction
from imaging import policies
from imaging.policies import Decision
from imaging.principals import PeerScope, Principal

from .models import Peer


def principal_for(peer: Peer | None, *, allow_unknown: bool = False) -> Principal:
    """The principal for ``peer`` (``None``: not a configured peer).

    ``allow_unknown`` (``DICOM_ALLOW_UNKNOWN_PEERS``, for a first installation) lets an
    unconfigured peer do everything, archive-wide; a configured peer is always held to its
    own flags and clinic, and a disabled one is refused even then.
    """
    if peer is None:
        return Principal.for_peer(PeerScope(
            ae_title="", known=False, enabled=allow_unknown, may_store=allow_unknown,
            may_query=allow_unknown, may_retrieve=allow_unknown))
    return Principal.for_peer(PeerScope(
        ae_title=peer.ae_title, known=True, enabled=peer.enabled, may_store=peer.may_store,
        may_query=peer.may_query, may_retrieve=peer.may_retrieve, clinic_id=peer.clinic_id))


def decide_peer(peer: Peer | None, action: str, *, allow_unknown: bool = False) -> Decision:
    """May ``peer`` do ``action``: ASSOCIATION (associate at all), STORE, SEARCH, RETRIEVE?"""
    return policies.decide(principal_for(peer, allow_unknown=allow_unknown),
                           AuditAction(action))


def may_receive(peer: Peer | None) -> bool:
    """Whether the portal sends C-MOVE results to ``peer``: known, enabled, with a port."""
    return peer is not None and peer.enabled and bool(peer.port)
