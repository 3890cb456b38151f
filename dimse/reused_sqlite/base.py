"""Django's SQLite backend, its connections handed from one association's thread to the next.

Each association runs in a thread of its own, so each opened a SQLite connection of its
own (the file opened, Django's functions registered, the journal pragmas run: about 1 ms of
a 25 ms C-FIND) and closed it when it ended. A serving process turns this backend on for
itself (:func:`dimse.server.reuse_sqlite_connections`, after a fork: a SQLite connection
must never cross one): a thread's connection, closed outside a transaction, is kept (at
most :data:`KEPT` of them for each database file) and the next thread to connect to that
file takes it, as a pool would. One in a transaction, or one that failed, is closed as
before. Closing a kept one still ends every query left unfinished on it, as a real close
does: an unfinished SELECT holds its read snapshot, which the next thread would otherwise
read from (SQLite reports no transaction for it).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from django.db.backends.sqlite3 import base

#: At most this many idle connections are kept per process and database file.
KEPT = 8

_lock = threading.Lock()
_idle: dict[str, list[Any]] = {}  # by database file


class DatabaseWrapper(base.DatabaseWrapper):
    # The cursors made on this thread's connection: closed when it is kept.
    _cursors: weakref.WeakSet[Any]

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        self._cursors = weakref.WeakSet()
        with _lock:
            kept = _idle.get(str(conn_params["database"]))
            if kept:
                return kept.pop()
        return super().get_new_connection(conn_params)

    def create_cursor(self, name: str | None = None) -> Any:
        cursor = super().create_cursor(name)
        self._cursors.add(cursor)
        return cursor

    def _close(self) -> None:
        raw = self.connection
        if raw is not None and not self.in_atomic_block and not raw.in_transaction \
                and not self.errors_occurred:
            for cursor in list(self._cursors):
                cursor.close()
            with _lock:
                kept = _idle.setdefault(str(self.settings_dict["NAME"]), [])
                if len(kept) < KEPT:
                    kept.append(raw)
                    return
        super()._close()  # type: ignore[misc]
