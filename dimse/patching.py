"""What a pynetdicom patch replaced, kept so ``uninstall()`` puts each attribute back as
it was: the owner's own value, or none at all where the owner inherited it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

_MISSING = object()

Originals = list[tuple[Any, str, Any]]


def originals(targets: Iterable[tuple[Any, str]]) -> Originals:
    """Each ``(owner, name)`` with the value in the owner's own namespace, as found now."""
    return [(owner, name, vars(owner).get(name, _MISSING)) for owner, name in targets]


def restore(saved: Originals) -> None:
    """Put back what :func:`originals` found. Idempotent."""
    for owner, name, original in saved:
        if original is _MISSING:
            if name in vars(owner):
                delattr(owner, name)
        else:
            setattr(owner, name, original)
