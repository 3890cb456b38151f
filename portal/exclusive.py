"""One run at a time of a periodic job, across processes and, on PostgreSQL, across hosts.

Beat on one node and an operator's command on another can start the same job together;
for a job that measures something and then acts on it (the local tier's free space, say)
two runs at once act twice. ``exclusive(name)`` is held for the run: a PostgreSQL session
advisory lock when the database is PostgreSQL (every node shares it), else an ``flock`` on
a file under ``DATA_DIR`` (the embedded default runs on one machine). It does not wait:
a run that finds the lock held is told so and skips.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
from collections.abc import Iterator

from django.conf import settings
from django.db import connection


def _key(name: str) -> int:
    """A signed 64-bit advisory lock key for ``name``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def exclusive(name: str) -> Iterator[bool]:
    """Yields whether this run holds ``name``; False means another run does."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [_key(name)])
            held = bool(cursor.fetchone()[0])
        try:
            yield held
        finally:
            if held:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [_key(name)])
        return
    folder = settings.DATA_DIR / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{name}.lock").open("a") as fp:
        try:
            fcntl.flock(fp, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fp, fcntl.LOCK_UN)
