"""Django's SQLite backend, its connections handed from one association's thread to the next.

Each association runs in a thread of its own, so each opened a SQLite connection of its
own (the file opened, Django's functions registered, the journal pragmas run: about 1 ms of
a 25 ms C-FIND) and closed it when it ended. A serving process turns this backend on for
itself (:func:`dimse.server.reuse_sqlite_connections`, after a fork: a SQLite connection
must never cross one): a thread's connection, closed outside a transaction, is kept (at
most :data:`KEPT` of them) and the next thread to connect takes it, as a pool would. One in
a transaction, or one that failed, is closed as before.
"""

from __future__ import annotations

import threading
from typing import Any

from django.db.backends.sqlite3 import base

#: At most this many idle connections are kept per process.
KEPT = 8

_lock = threading.Lock()
_idle: list[Any] = []


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        with _lock:
            if _idle:
                return _idle.pop()
        return super().get_new_connection(conn_params)

    def _close(self) -> None:
        raw = self.connection
        if raw is not None and not self.in_atomic_block and not raw.in_transaction \
                and not self.errors_occurred:
            with _lock:
                if len(_idle) < KEPT:
                    _idle.append(raw)
                    return
        super()._close()  # type: ignore[misc]
