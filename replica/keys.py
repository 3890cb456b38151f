"""The key-encryption keys (KEKs) that wrap every replica object's data key.

Read from two settings: ``REPLICA_KEYS`` (``id1:<base64 of 32 bytes>,id2:<base64>``) and
``REPLICA_CURRENT_KEY`` (the id new objects and rewraps use). Older ids stay in the ring
until every object wrapped by them has been rewrapped (``replica.crypto.rewrap``); an id
that leaves the ring too early makes its objects unreadable, and losing every copy of a key
is the one way to lose the replica.

The keys are validated here, not in settings, so that a bad key refuses replication (a
system check and ``KeyRing.from_settings``) without stopping the rest of the portal. No
message ever includes key material.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

KEY_BYTES = 32  # AES-256
# Key ids travel in S3 metadata (ASCII) and in a 64-character database column.
KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class KeyRing:
    """The KEKs by id, and which one is current."""

    def __init__(self, keys: Mapping[str, bytes], current_id: str) -> None:
        for key_id, key in keys.items():
            if not KEY_ID.fullmatch(key_id):
                raise ValueError(f"replica key id {key_id!r} is not 1 to 64 of A-Z a-z 0-9 . _ -")
            if len(key) != KEY_BYTES:
                raise ValueError(f"replica key {key_id!r} is {len(key)} bytes, not {KEY_BYTES}")
        if current_id not in keys:
            raise ValueError(f"the current replica key {current_id!r} is not in the ring")
        self._keys = dict(keys)
        self.current_id = current_id

    def kek(self, key_id: str) -> bytes:
        try:
            return self._keys[key_id]
        except KeyError:
            raise KeyError(
                f"replica key {key_id!r} is not in REPLICA_KEYS (known: "
                f"{', '.join(sorted(self._keys))}); objects wrapped by it cannot be read until "
                "it is put back") from None

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    @classmethod
    def from_settings(cls) -> KeyRing:
        keys, problems = parse_keys(settings.REPLICA_KEYS)
        problems += _current_key_problems(
            settings.REPLICA_KEYS, keys, settings.REPLICA_CURRENT_KEY)
        if problems:
            raise ImproperlyConfigured("; ".join(problems))
        return cls(keys, settings.REPLICA_CURRENT_KEY)


def parse_keys(text: str) -> tuple[dict[str, bytes], list[str]]:
    """The readable keys of a ``REPLICA_KEYS`` value, and what is wrong with the others."""
    keys: dict[str, bytes] = {}
    problems: list[str] = []
    for number, item in enumerate((part.strip() for part in text.split(",")), start=1):
        if not item:
            continue
        key_id, colon, encoded = (part.strip() for part in item.partition(":"))
        if not colon or not key_id:
            problems.append(f"REPLICA_KEYS entry {number} is not id:<base64 key>")
            continue
        if not KEY_ID.fullmatch(key_id):
            problems.append(
                f"REPLICA_KEYS entry {number}: the id is not 1 to 64 of A-Z a-z 0-9 . _ -")
            continue
        if key_id in keys:
            problems.append(f"REPLICA_KEYS has key {key_id!r} twice")
            continue
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            problems.append(f"REPLICA_KEYS key {key_id!r} is not valid base64")
            continue
        if len(key) != KEY_BYTES:
            problems.append(f"REPLICA_KEYS key {key_id!r} is {len(key)} bytes, not {KEY_BYTES}")
            continue
        keys[key_id] = key
    return keys, problems


def _current_key_problems(text: str, keys: Mapping[str, bytes], current_id: str) -> list[str]:
    if not current_id:
        return ["REPLICA_CURRENT_KEY is not set"]
    named = {item.partition(":")[0].strip() for item in text.split(",")}
    if current_id not in keys and current_id not in named:  # else parse_keys said why
        return [f"REPLICA_CURRENT_KEY {current_id!r} is not a key in REPLICA_KEYS"]
    return []


def check_keys() -> list[str]:
    """What stops replication from using the configured keys (empty: nothing).

    Only asked when a replica is configured (``REPLICA_URL``): without one, no key is needed.
    A malformed retired key is reported too, since the objects it wraps could not be read.
    """
    if not settings.REPLICA_URL:
        return []
    keys, problems = parse_keys(settings.REPLICA_KEYS)
    return problems + _current_key_problems(
        settings.REPLICA_KEYS, keys, settings.REPLICA_CURRENT_KEY)


def generate_key() -> str:
    """A fresh KEK, base64-encoded as ``REPLICA_KEYS`` takes it."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")
