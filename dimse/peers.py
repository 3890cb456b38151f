"""Recognising a calling peer by its AE title and the address it connects from."""

from __future__ import annotations

import ipaddress
import socket

from .models import Peer


def addresses_of(host: str) -> set[str]:
    """The IP addresses ``host`` (a literal address or a name) stands for."""
    try:
        return {str(ipaddress.ip_address(host))}
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return set()
    return {str(ipaddress.ip_address(info[4][0])) for info in infos}


def normalised(address: str) -> str:
    """An IPv4-mapped IPv6 address (``::ffff:10.0.0.5``, as a dual-stack socket reports
    one) as the IPv4 address it is; other addresses in their canonical form."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def recognise(ae_title: str, address: str) -> Peer | None:
    """The configured peer with this AE title whose host is ``address``, else ``None``.

    A known AE title calling from another host is not that peer: AE titles are easy to
    spoof, so both must match.
    """
    peer = Peer.objects.filter(ae_title=ae_title.strip()).first()
    if peer is None:
        return None
    if normalised(address) in addresses_of(peer.host):
        return peer
    return None


def destination(ae_title: str) -> Peer | None:
    """The configured peer a C-MOVE names as its destination, if any."""
    return Peer.objects.filter(ae_title=ae_title.strip()).first()
