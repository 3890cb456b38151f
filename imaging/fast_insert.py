"""Multi-row INSERTs for the ingest hot path, without model objects or the ORM's query
building: the same field preparation as ``bulk_create``, one INSERT of plain VALUES rows.

For one object the ORM's work was half the index cost; for a batch on PostgreSQL,
``bulk_create`` sends arrays that psycopg quotes in Python, a millisecond per instance with
the JSON metadata. The replica's copy rows, written in the same transaction, use it too.
"""

from __future__ import annotations

from typing import Any

from django.db import connection, models
from django.utils import timezone


def insert_rows(model: type[models.Model], rows: list[dict[str, Any]]) -> list[int]:
    """Insert ``rows`` (field values by attribute name; the rest take their defaults,
    ``auto_now_add`` fields the time now) into ``model``'s table; their primary keys, in
    order."""
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    now = timezone.now()
    values: list[Any] = []
    for row in rows:
        for f in fields:
            if f.attname in row:
                value = row[f.attname]
            else:
                value = now if getattr(f, "auto_now_add", False) else f.get_default()
            values.append(f.get_db_prep_save(value, connection))
    one = "(" + ", ".join(["%s"] * len(fields)) + ")"
    table = connection.ops.quote_name(model._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    with connection.cursor() as cursor:
        if connection.features.can_return_rows_from_bulk_insert:
            cursor.execute(f"INSERT INTO {table} ({columns}) VALUES "  # noqa: S608 - names only
                           f"{', '.join([one] * len(rows))} RETURNING id", values)
            return [found[0] for found in cursor.fetchall()]
        # A database that cannot say which ids a multi-row INSERT gave: one row at a time.
        returning = " RETURNING id" if connection.features.can_return_columns_from_insert else ""
        statement = f"INSERT INTO {table} ({columns}) VALUES {one}{returning}"  # noqa: S608
        pks = []
        for start in range(0, len(values), len(fields)):
            cursor.execute(statement, values[start:start + len(fields)])
            pks.append(cursor.fetchone()[0] if returning else cursor.lastrowid)
        return pks
