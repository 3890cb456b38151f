"""What every replica command checks before it touches the bucket: a replica is configured
and its keys can be read. Refused as a command error, so the operator reads one line."""

from __future__ import annotations

from django.core.management.base import CommandError

from replica import store
from replica.keys import KeyRing


def key_ring(refused: str) -> KeyRing:
    """The key ring, or a CommandError: ``refused`` names what is refused ("restore")."""
    if not store.configured():
        raise CommandError("no replica is configured (REPLICA_URL)")
    try:
        return KeyRing.from_settings()
    except Exception as exc:
        raise CommandError(f"{refused} refused: {exc}") from exc
