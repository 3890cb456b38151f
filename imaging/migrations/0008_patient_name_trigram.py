"""A trigram index on ``UPPER(Patient.name)``, for QIDO-RS and C-FIND name wildcards with a
leading ``*`` (``*SILVA*``).

``imaging.query`` matches a person name as ``UPPER(name) LIKE UPPER(pattern)`` (PN ignores
case). 0003's B-tree (``text_pattern_ops``) serves a literal prefix only (``PERE*``); with a
leading wildcard PostgreSQL scanned every patient. A pg_trgm GIN index on the same
expression serves ``LIKE '%SILVA%'`` as a bitmap scan. PostgreSQL only; without pg_trgm
(see 0006) the index is skipped with a warning and matching stays correct, only slower.
"""

from importlib import import_module

from django.db import migrations

NAME = "imaging_patient_name_upper_trgm"
_worklist = import_module("imaging.migrations.0006_worklist_search_fill")


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    if not _worklist._has_trigrams(schema_editor):
        return
    schema_editor.execute(f'CREATE INDEX IF NOT EXISTS {NAME} ON imaging_patient '
                          'USING gin (UPPER("name") gin_trgm_ops)')


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"DROP INDEX IF EXISTS {NAME}")


class Migration(migrations.Migration):
    dependencies = [("imaging", "0007_rejection")]
    operations = [migrations.RunPython(create, drop, elidable=False)]
