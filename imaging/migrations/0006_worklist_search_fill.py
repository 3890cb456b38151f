"""Fill the worklist's search columns of existing rows, and index them for "contains".

``Patient.name_search`` and ``Study.referring_physician_search`` are the names as
:func:`imaging.search_text.searchable` gives them; ``Study.body_parts`` is its series' body
parts as ingest now writes them. Rows are read and written in batches, so an archive of any
size migrates in bounded memory.

On PostgreSQL the worklist's default order gets its index (newest first, undated last), and
the normalized names, the modalities and the body parts a pg_trgm GIN index, which serves
``LIKE '%PART%'``.
Creating the extension needs a privilege the application's role may lack in production:
then the index is skipped with a warning (searches stay correct, only slower) and the
migration still succeeds; a database owner can run ``CREATE EXTENSION pg_trgm`` and migrate
the index later with ``manage.py migrate imaging 0005 && manage.py migrate imaging``.
"""

import logging
import warnings

from django.db import DatabaseError, migrations, transaction

from imaging.search_text import code_list, searchable

log = logging.getLogger(__name__)
BATCH = 2000
TRIGRAM_INDEXES = [
    ("imaging_patient_name_search_trgm", "imaging_patient", "name_search"),
    ("imaging_study_referring_search_trgm", "imaging_study", "referring_physician_search"),
    # "CT" among "CT\\SR": LIKE '%\\CT' and '%\\CT\\%' (imaging.worklist._has_code).
    ("imaging_study_modalities_trgm", "imaging_study", "modalities"),
    ("imaging_study_body_parts_trgm", "imaging_study", "body_parts"),
]


def fill(apps, schema_editor):
    Patient = apps.get_model("imaging", "Patient")
    Study = apps.get_model("imaging", "Study")
    Series = apps.get_model("imaging", "Series")
    last = 0
    while True:
        batch = list(Patient.objects.filter(pk__gt=last).order_by("pk")[:BATCH])
        if not batch:
            break
        for patient in batch:
            patient.name_search = searchable(patient.name)[:324]
        Patient.objects.bulk_update(batch, ["name_search"])
        last = batch[-1].pk
    last = 0
    while True:
        batch = list(Study.objects.filter(pk__gt=last).order_by("pk")[:BATCH])
        if not batch:
            break
        parts: dict[int, list[str]] = {}
        for study_id, part in Series.objects.filter(study__in=batch).values_list(
                "study_id", "body_part"):
            parts.setdefault(study_id, []).append(part)
        for study in batch:
            study.referring_physician_search = searchable(study.referring_physician)[:324]
            study.body_parts = code_list(parts.get(study.pk, []), 128)
        Study.objects.bulk_update(batch, ["referring_physician_search", "body_parts"])
        last = batch[-1].pk

# The worklist's default order (newest first, undated last: imaging.worklist), which
# 0003's index (DESC, so NULLS FIRST) cannot serve.
DATE_ORDER_INDEX = ('CREATE INDEX IF NOT EXISTS imaging_study_worklist_date ON imaging_study '
                    '("study_date" DESC NULLS LAST, "study_time" DESC, "id" DESC)')


def _has_trigrams(schema_editor) -> bool:
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")
        if cursor.fetchone():
            return True
    try:
        with transaction.atomic(using=schema_editor.connection.alias):
            schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except DatabaseError as exc:
        message = (f"pg_trgm could not be created ({exc}); the worklist's name search "
                   "works without its trigram index, more slowly: see migration 0006")
        log.warning(message)
        warnings.warn(message, stacklevel=1)
        return False
    return True


def index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(DATE_ORDER_INDEX)
    if not _has_trigrams(schema_editor):
        return
    for name, table, column in TRIGRAM_INDEXES:
        schema_editor.execute(f'CREATE INDEX IF NOT EXISTS {name} ON {table} '
                              f'USING gin ("{column}" gin_trgm_ops)')


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("DROP INDEX IF EXISTS imaging_study_worklist_date")
    for name, _table, _column in TRIGRAM_INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("imaging", "0005_worklist_search_columns")]
    operations = [
        migrations.RunPython(fill, migrations.RunPython.noop, elidable=False),
        migrations.RunPython(index, drop_index, elidable=False),
    ]
