"""The client's address, the one every limit and the audit trail use.

Behind a reverse proxy every request's ``REMOTE_ADDR`` is the proxy, so lockouts and
attempt limits would count all clients as one, and the audit would name the proxy. The
address comes from ``X-Forwarded-For`` only when the request arrives from a proxy listed
in ``TRUSTED_PROXIES``: the list is walked from the right (the entry the nearest proxy
added), skipping further trusted proxies, and the first untrusted entry is the client.
Entries left of it were written by the client and are never believed. From any other
address the header is ignored, so a forged one changes nothing.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse(value: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def _trusted(address: IPAddress) -> bool:
    return any(address in network for network in settings.TRUSTED_PROXIES)


def client_address(request: HttpRequest) -> str:
    """The address of the client this request came from ("" when unknown)."""
    remote = str(request.META.get("REMOTE_ADDR", ""))
    peer = _parse(remote)
    if peer is None or not _trusted(peer):
        return remote
    forwarded = str(request.META.get("HTTP_X_FORWARDED_FOR", ""))
    for entry in reversed(forwarded.split(",")):
        hop = _parse(entry)
        if hop is None:
            # Unreadable: the header is not what a proxy writes; keep the last hop known.
            break
        if not _trusted(hop):
            return str(hop)
        peer = hop
    return str(peer)


def from_networks(request: HttpRequest, networks: list[ipaddress.IPv4Network |
                                                  ipaddress.IPv6Network]) -> bool:
    """Whether the request's client (as :func:`client_address` finds it) is on one of
    ``networks``."""
    address = _parse(client_address(request))
    return address is not None and any(address in network for network in networks)
