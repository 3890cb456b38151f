"""The hash chain over audit events: how an entry's hash is computed and checked, and how
the chain's head is signed with a key the database does not hold."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings

GENESIS = "0" * 64
CHAINED_FIELDS = (
    "seq", "at", "user_pk", "username", "role", "peer_ae", "ip", "client", "action",
    "outcome", "level", "object_uid", "patient_pk", "patient_ref", "study_uid", "break_glass",
    "reason", "detail",
)
# The name a field has in the canonical form when it differs from the model's: ``user_pk``
# was the foreign key ``user`` (``user_id``) until migration 0003, and entries written
# before must still hash the same.
CANONICAL_NAMES = {"user_pk": "user_id"}
# A signed checkpoint is kept at every entry whose sequence number is a multiple of this.
CHECKPOINT_EVERY = 1000
_KEY_LABEL = b"imaging-portal/audit-chain-key/v1"


def canonical(fields: Mapping[str, Any]) -> bytes:
    values = {CANONICAL_NAMES.get(name, name): fields.get(name) for name in CHAINED_FIELDS}
    values["at"] = values["at"].isoformat() if values["at"] is not None else None
    return json.dumps(values, sort_keys=True, separators=(",", ":"), default=str).encode()


def entry_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical(fields)).hexdigest()


def chain_key() -> bytes:
    """``AUDIT_CHAIN_KEY``, or else a key derived from ``SECRET_KEY`` under a label (an
    HMAC, so the secret itself is never used as the chain key)."""
    configured: str = getattr(settings, "AUDIT_CHAIN_KEY", "")
    if configured:
        return configured.encode()
    return hmac.new(settings.SECRET_KEY.encode(), _KEY_LABEL, hashlib.sha256).digest()


def sign(seq: int, digest: str, key: bytes | None = None) -> str:
    """HMAC-SHA256 of a chain position (sequence number and entry hash)."""
    return hmac.new(key or chain_key(), f"{seq}:{digest}".encode(), hashlib.sha256).hexdigest()


def signed(seq: int, digest: str, signature: str, key: bytes | None = None) -> bool:
    return hmac.compare_digest(sign(seq, digest, key), signature)


@dataclass(frozen=True)
class BrokenLink:
    seq: int
    problem: str


def verify(entries: Iterable[Mapping[str, Any]],
           checkpoints: Mapping[int, str] | None = None) -> BrokenLink | None:
    """The first entry (in sequence order) whose link does not hold, or None.

    ``checkpoints`` maps sequence numbers to the entry hash a signed checkpoint holds
    there (signatures checked by the caller); an entry that differs was rebuilt.
    """
    checkpoints = checkpoints or {}
    prev_hash, prev_seq = GENESIS, 0
    for entry in entries:
        if entry["seq"] != prev_seq + 1:
            return BrokenLink(entry["seq"], f"entry {prev_seq + 1} is missing")
        if entry["prev_hash"] != prev_hash:
            return BrokenLink(entry["seq"], "does not point at the previous entry's hash")
        if entry_hash(prev_hash, entry) != entry["entry_hash"]:
            return BrokenLink(entry["seq"], "content does not match its hash (altered)")
        kept = checkpoints.get(entry["seq"])
        if kept is not None and kept != entry["entry_hash"]:
            return BrokenLink(entry["seq"], "differs from its signed checkpoint (the chain "
                                            "was rebuilt)")
        prev_hash, prev_seq = entry["entry_hash"], entry["seq"]
    return None
