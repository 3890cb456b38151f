"""Rate limits on guessing receipt codes: failures counted per address and per code prefix.

Counts live in Django's cache (configure a shared cache such as Redis for several web
workers). Per address stops one machine trying many codes; per prefix (the first group,
printed on the receipt and shown in lists) stops many machines trying birth dates for one
code. Past either limit within the window, attempts get the 429 page until it passes.
"""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache

DEFAULT_ADDRESS_LIMIT = 10
DEFAULT_PREFIX_LIMIT = 5
DEFAULT_WINDOW = 15 * 60


def window() -> int:
    return int(getattr(settings, "PATIENT_CODE_FAILURE_WINDOW", DEFAULT_WINDOW))


def _limits() -> tuple[int, int]:
    return (int(getattr(settings, "PATIENT_CODE_ADDRESS_LIMIT", DEFAULT_ADDRESS_LIMIT)),
            int(getattr(settings, "PATIENT_CODE_PREFIX_LIMIT", DEFAULT_PREFIX_LIMIT)))


def _keys(ip: str, prefix: str) -> tuple[str, str]:
    return f"patients:code-failures:ip:{ip or '-'}", f"patients:code-failures:prefix:{prefix}"


def blocked(ip: str, prefix: str) -> bool:
    ip_key, prefix_key = _keys(ip, prefix)
    ip_limit, prefix_limit = _limits()
    return (int(cache.get(ip_key, 0)) >= ip_limit
            or (bool(prefix) and int(cache.get(prefix_key, 0)) >= prefix_limit))


def _count(key: str) -> None:
    if cache.add(key, 1, window()):
        return
    try:
        cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, window())


def failed(ip: str, prefix: str) -> None:
    """Count one failed attempt against the address and the code prefix typed."""
    ip_key, prefix_key = _keys(ip, prefix)
    _count(ip_key)
    if prefix:
        _count(prefix_key)
