"""Rate limiting for guessing links: failed token and PIN attempts counted per address.

The counts live in Django's cache (per-process memory by default; configure a shared cache
such as Redis for several web workers). After ``SHARING_FAILURE_LIMIT`` failures within
``SHARING_FAILURE_WINDOW`` seconds an address is refused until the window has passed.
"""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache

DEFAULT_LIMIT = 10
DEFAULT_WINDOW = 15 * 60


def limit() -> int:
    return int(getattr(settings, "SHARING_FAILURE_LIMIT", DEFAULT_LIMIT))


def window() -> int:
    return int(getattr(settings, "SHARING_FAILURE_WINDOW", DEFAULT_WINDOW))


def _key(ip: str) -> str:
    return f"sharing:failures:{ip or '-'}"


def blocked(ip: str) -> bool:
    return int(cache.get(_key(ip), 0)) >= limit()


def failed(ip: str) -> int:
    """Count one failure for ``ip``; returns the count in the current window."""
    key = _key(ip)
    if cache.add(key, 1, window()):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, window())
        return 1

