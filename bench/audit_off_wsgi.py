"""The portal's WSGI application with the audit write replaced by a no-op. Benchmarks only.

``bench/dicomweb.py`` starts gunicorn on ``bench.audit_off_wsgi:application`` beside the
real ``portal.wsgi:application`` to show what the audit trail costs per request. There is
deliberately no production switch for this: the portal always audits.

Django is set up first (``audit.trail`` imports models), then ``audit.trail.record`` is
replaced and every already imported module that bound ``record`` by name is pointed at the
no-op; modules imported later (``imaging.access``, ``dicomweb.stow``) import the no-op.
"""

from __future__ import annotations

import os
import sys
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

import django

django.setup()

import audit.trail  # noqa: E402

_original_record = audit.trail.record


def _no_audit(*args: Any, **kwargs: Any) -> list[Any]:
    return []


audit.trail.record = _no_audit  # type: ignore[assignment]
for _module in list(sys.modules.values()):
    if getattr(_module, "record", None) is _original_record:
        _module.record = _no_audit  # type: ignore[attr-defined]

# Reads counted on viewing sessions go through read_sessions.record_read (called by module
# attribute everywhere): a no-op too, so no session row is written either.
import audit.read_sessions  # noqa: E402


def _no_read(*args: Any, **kwargs: Any) -> None:
    return None


audit.read_sessions.record_read = _no_read  # type: ignore[assignment]

from portal.wsgi import application  # noqa: E402

__all__ = ["application"]
