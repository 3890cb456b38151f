"""Indexes for QIDO-RS and C-FIND (imaging.query) that Django's model indexes cannot say.

PostgreSQL only: case-insensitive person-name matching compares UPPER(name), and wildcard
matching with a literal prefix (``PERE*``) is a LIKE that a B-tree serves only with the
pattern operator class. (Django already adds ``_like`` pattern indexes for the indexed
CharFields patient_id, accession_number and modalities.) SQLite does without them.
"""

from django.db import migrations

INDEXES = [
    ("imaging_patient_name_upper_like",
     'CREATE INDEX IF NOT EXISTS imaging_patient_name_upper_like '
     'ON imaging_patient (UPPER("name") text_pattern_ops)'),
    ("imaging_study_date_order",
     'CREATE INDEX IF NOT EXISTS imaging_study_date_order '
     'ON imaging_study ("study_date" DESC, "study_time" DESC, "id" DESC)'),
]


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for _name, sql in INDEXES:
        schema_editor.execute(sql)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, _sql in INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("imaging", "0002_patient_clinic")]
    operations = [migrations.RunPython(create, drop, elidable=False)]
