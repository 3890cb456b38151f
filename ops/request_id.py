"""The request id: one per HTTP request, carried into the log lines and Celery tasks it
causes, so an operator can follow one request across web nodes and workers.

A client's (or the load balancer's) ``X-Request-ID`` is kept when it is sane (letters,
digits, ``-``, ``_``, ``.``, at most 64 characters); anything else is replaced by a fresh
one, so a forged header can never inject text into the logs.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

HEADER = "X-Request-ID"
META_KEY = "HTTP_X_REQUEST_ID"
#: The Celery message header that carries it to the worker.
TASK_HEADER = "portal_request_id"

_SANE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_current: ContextVar[str] = ContextVar("request_id", default="")


def sane(value: str | None) -> str | None:
    """``value`` if it may be used as a request id, else None."""
    return value if value and _SANE.fullmatch(value) else None


def new() -> str:
    return uuid.uuid4().hex


def current() -> str:
    """The request id of the work this thread is doing ("" outside a request or task)."""
    return _current.get()


def bind(value: str) -> object:
    """Make ``value`` the current request id; returns the token for :func:`unbind`."""
    return _current.set(value)


def unbind(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]
