"""Multi-row INSERTs for the ingest hot path, without model objects or the ORM's query
building: the same field preparation as ``bulk_create``, one INSERT of plain VALUES rows.

For one object the ORM's work was half the index cost; for a batch on PostgreSQL,
``bulk_create`` sends arrays that psycopg quotes in Python, a millisecond per instance with
the JSON metadata. The replica's copy rows, written in the same transaction, use it too.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from django.db import connection, connections, models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone


class _Column(NamedTuple):
    field: models.Field[Any, Any]
    #: The prepared default when the row gives no value and it is the same for every row;
    #: ``_NOW`` for ``auto_now_add``, ``_CALL`` for a default computed per row.
    default: object


_NOW = object()
_CALL = object()
#: The columns of each model as one connection prepares them, made once per process:
#: preparing the defaults of a copy row's twenty columns on every insert cost more than
#: the insert itself.
_columns: dict[tuple[type[models.Model], str, str], tuple[list[_Column], str, str]] = {}


def _model_columns(model: type[models.Model], db: BaseDatabaseWrapper
                   ) -> tuple[list[_Column], str, str]:
    """The columns, the quoted table name and the quoted column list."""
    key = (model, db.alias, db.vendor)
    found = _columns.get(key)
    if found is None:
        columns = []
        for f in model._meta.concrete_fields:
            if f.primary_key:
                continue
            if getattr(f, "auto_now_add", False):
                default: object = _NOW
            elif f.has_default() and callable(f.default):
                default = _CALL
            else:
                default = f.get_db_prep_save(f.get_default(), db)
            columns.append(_Column(f, default))
        found = (columns, db.ops.quote_name(model._meta.db_table),
                 ", ".join(db.ops.quote_name(c.field.column) for c in columns))
        _columns[key] = found
    return found


def insert_rows(model: type[models.Model], rows: list[dict[str, Any]]) -> list[int]:
    """Insert ``rows`` (field values by attribute name; the rest take their defaults,
    ``auto_now_add`` fields the time now) into ``model``'s table; their primary keys, in
    order."""
    db = connections[connection.alias]  # the wrapper itself, not its per-access proxy
    columns, table, names = _model_columns(model, db)
    now: object = None
    values: list[Any] = []
    for row in rows:
        for column in columns:
            f = column.field
            if f.attname in row:
                values.append(f.get_db_prep_save(row[f.attname], db))
            elif column.default is _NOW:
                if now is None:
                    now = f.get_db_prep_save(timezone.now(), db)
                values.append(now)
            elif column.default is _CALL:
                values.append(f.get_db_prep_save(f.get_default(), db))
            else:
                values.append(column.default)
    one = "(" + ", ".join(["%s"] * len(columns)) + ")"
    with db.cursor() as cursor:
        if db.features.can_return_rows_from_bulk_insert:
            cursor.execute(f"INSERT INTO {table} ({names}) VALUES "  # noqa: S608 - names only
                           f"{', '.join([one] * len(rows))} RETURNING id", values)
            return [found[0] for found in cursor.fetchall()]
        # A database that cannot say which ids a multi-row INSERT gave: one row at a time.
        returning = " RETURNING id" if db.features.can_return_columns_from_insert else ""
        statement = f"INSERT INTO {table} ({names}) VALUES {one}{returning}"  # noqa: S608
        pks = []
        for start in range(0, len(values), len(columns)):
            cursor.execute(statement, values[start:start + len(columns)])
            pks.append(cursor.fetchone()[0] if returning else cursor.lastrowid)
        return pks
