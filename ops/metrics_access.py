"""Who may read ``/metrics``: a bearer token (``METRICS_TOKEN``) or an address in the
monitoring networks (``METRICS_ALLOWED_NETS``), either one sufficing. With neither set
the endpoint is off and answers 404, as it does to anyone else: its existence never shows.
"""

from __future__ import annotations

import enum
import hmac
import ipaddress

from django.conf import settings


class Access(enum.Enum):
    OFF = "off"
    ALLOWED = "allowed"
    REFUSED = "refused"


def decide(address: str, authorization: str) -> Access:
    token = str(settings.METRICS_TOKEN or "")
    networks = settings.METRICS_ALLOWED_NETS
    if not token and not networks:
        return Access.OFF
    if token:
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                              token.encode()):
            return Access.ALLOWED
    try:
        client = ipaddress.ip_address(address)
    except ValueError:
        return Access.REFUSED
    if any(client in network for network in networks):
        return Access.ALLOWED
    return Access.REFUSED
