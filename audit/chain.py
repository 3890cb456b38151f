"""The hash chain over audit events: how an entry's hash is computed and checked."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64
CHAINED_FIELDS = (
    "seq", "at", "user_id", "username", "role", "peer_ae", "ip", "client", "action",
    "outcome", "level", "object_uid", "patient_pk", "patient_ref", "study_uid", "break_glass",
    "reason", "detail",
)


def canonical(fields: dict[str, Any]) -> bytes:
    values = {name: fields.get(name) for name in CHAINED_FIELDS}
    values["at"] = values["at"].isoformat() if values["at"] is not None else None
    return json.dumps(values, sort_keys=True, separators=(",", ":"), default=str).encode()


def entry_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical(fields)).hexdigest()


@dataclass(frozen=True)
class BrokenLink:
    seq: int
    problem: str


def verify(entries: Iterable[dict[str, Any]]) -> BrokenLink | None:
    """The first entry (in sequence order) whose link does not hold, or None."""
    prev_hash, prev_seq = GENESIS, 0
    for entry in entries:
        if entry["seq"] != prev_seq + 1:
            return BrokenLink(entry["seq"], f"entry {prev_seq + 1} is missing")
        if entry["prev_hash"] != prev_hash:
            return BrokenLink(entry["seq"], "does not point at the previous entry's hash")
        if entry_hash(prev_hash, entry) != entry["entry_hash"]:
            return BrokenLink(entry["seq"], "content does not match its hash (altered)")
        prev_hash, prev_seq = entry["entry_hash"], entry["seq"]
    return None
