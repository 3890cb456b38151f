"""Recognising an HL7 sender, and the principal it acts as in :mod:`imaging.policies`.

An HL7 peer is recognised as a DICOM peer is (:mod:`dimse.peers`): by what it says it is
(MSH-3 sending application, MSH-4 facility) *and* the address it connects from. It acts as
a peer principal that may store, within the one clinic it feeds; so the access policy, not
this module, decides which patients its messages may touch.
"""

from __future__ import annotations

from dimse.peers import addresses_of, normalised
from imaging.principals import PeerScope, Principal

from .hl7_messages import Header
from .models import Hl7Peer


def recognise(header: Header, address: str) -> Hl7Peer | None:
    """The configured peer that sent ``header`` from ``address``, else ``None``."""
    address = normalised(address)
    for peer in Hl7Peer.objects.filter(sending_application=header.sending_application):
        if peer.sending_facility and peer.sending_facility != header.sending_facility:
            continue
        if any(address in addresses_of(host) for host in peer.hosts()):
            return peer
    return None


def principal_for(peer: Hl7Peer | None, *, allow_unknown: bool = False) -> Principal:
    """``peer`` as a principal (``None``: not configured; ``allow_unknown`` is
    ``HL7_ALLOW_UNKNOWN_PEERS``). It may store, that is write orders and patient records,
    and nothing else: no query, no retrieve."""
    if peer is None:
        return Principal.for_peer(PeerScope(ae_title="", known=False, enabled=allow_unknown,
                                            may_store=allow_unknown))
    return Principal.for_peer(PeerScope(ae_title=peer.name[:16], known=True,
                                        enabled=peer.enabled, may_store=True,
                                        clinic_id=peer.clinic_id))
