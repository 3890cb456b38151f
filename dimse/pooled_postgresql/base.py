"""Django's PostgreSQL backend with its pool, falling back to a connection of its own.

The listener turns this on for its serving processes (:func:`dimse.server.pool_connections`,
``DICOM_DATABASE_POOL``). A thread takes a connection from the pool when the pool has one
ready within :data:`READY_WAIT`; otherwise it opens a connection of its own, as without the
pool, and closes it when done. So:

* while the database is down an association does not wait on the pool: after
  :data:`READY_WAIT` the direct connection fails at once (refused) and so does the
  association's operation, as without the pool;
* right after a restart, while the pool is still waiting out its reconnection delays (they
  double from 1 s), the direct connection is served at once: a pool that is not ready
  never refuses what a new connection would have served. The pool refills meanwhile.
"""

from __future__ import annotations

from typing import Any

import psycopg
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.postgresql import base
from psycopg import IsolationLevel
from psycopg_pool import PoolTimeout

#: Seconds a thread waits for a connection of the pool before it opens one of its own:
#: long enough for the pool to open a new one (5-10 ms on a loaded machine).
READY_WAIT = 0.25


class DatabaseWrapper(base.DatabaseWrapper):
    # django-stubs know Django's generic backend, not PostgreSQL's own attributes.
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        this: Any = self
        pool = this.pool
        if pool is None:
            return super().get_new_connection(conn_params)
        pool.open(wait=False)
        try:
            connection = pool.getconn(timeout=READY_WAIT)
        except PoolTimeout:
            # As the pool opens its own (autocommit, configured), but not the pool's.
            connection = psycopg.connect(**{**conn_params, "autocommit": True})
            this._configure_connection(connection)
        isolation_level = self.settings_dict["OPTIONS"].get("isolation_level")
        self.isolation_level = IsolationLevel(
            IsolationLevel.READ_COMMITTED if isolation_level is None else isolation_level)
        if isolation_level is not None:
            connection.isolation_level = self.isolation_level
        return connection

    def _close(self) -> None:
        this: Any = self
        if self.connection is not None and this.pool is not None \
                and getattr(self.connection, "_pool", None) is None:
            with self.wrap_database_errors:  # a connection of its own: closed, not given back
                self.connection.close()
                self.connection = None
            return
        super()._close()  # type: ignore[misc]

    def close_if_health_check_failed(self) -> None:
        if self.connection is not None and getattr(self.connection, "_pool", None) is None:
            # The pool checks its own; a connection of its own is checked as without it.
            BaseDatabaseWrapper.close_if_health_check_failed(self)
            return
        super().close_if_health_check_failed()
