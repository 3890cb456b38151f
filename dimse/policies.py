"""What a DICOM peer may do. The listener asks here for every association and operation.

Peers are a principal of their own, not portal users, because nothing about a user's access
fits a machine: a peer has no role, no clinic membership, no per-patient grant and no
second factor, and it cannot open a break-the-glass access with a reason. What an admin
decides about a peer is which node it is (AE title and host) and which DIMSE services it may
use; the person at a workstation is authenticated there, not here. So a known, enabled peer
sees the archive as a whole for the services it is allowed, and every operation it performs
is still written to the same audit trail as the web's, under its AE title and address.

Decisions only, like :mod:`imaging.policies`; recording them is the handlers' job.
"""

from __future__ import annotations

from audit.models import AuditAction
from imaging.policies import Decision

from .models import Peer

#: The per-service permission flag each action needs.
_PERMISSION = {
    AuditAction.STORE: "may_store",
    AuditAction.SEARCH: "may_query",
    AuditAction.RETRIEVE: "may_retrieve",
}


def decide_peer(peer: Peer | None, action: str, *, allow_unknown: bool = False) -> Decision:
    """May ``peer`` (``None``: not a configured peer) do ``action``?

    ``action`` is :attr:`AuditAction.ASSOCIATION` (may it associate at all) or one of STORE,
    SEARCH and RETRIEVE. ``allow_unknown`` (``DICOM_ALLOW_UNKNOWN_PEERS``, for a first
    installation) lets an unconfigured peer do everything; a configured peer is always held
    to its own flags, and a disabled one is refused even then.
    """
    if peer is None:
        if allow_unknown:
            return Decision(True, why="unknown peer allowed by DICOM_ALLOW_UNKNOWN_PEERS")
        return Decision(False, why="calling AE title and host are not a known peer")
    if not peer.enabled:
        return Decision(False, why="peer is disabled")
    if action == AuditAction.ASSOCIATION:
        return Decision(True)
    flag = _PERMISSION.get(AuditAction(action))
    if flag is None:
        return Decision(False, why=f"peers may not {action}")
    allowed = bool(getattr(peer, flag))
    return Decision(allowed, why="" if allowed else f"peer may not {action}")


def may_receive(peer: Peer | None) -> bool:
    """Whether the portal sends C-MOVE results to ``peer``: known, enabled, with a port."""
    return peer is not None and peer.enabled and bool(peer.port)
