"""The chain head row, and database triggers that refuse UPDATE and DELETE on the trail."""

from django.db import migrations

TABLE = "audit_auditevent"


def forwards(apps, schema_editor):
    apps.get_model("audit", "ChainHead").objects.get_or_create(pk=1)
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(
            """
            CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger AS $$
            BEGIN RAISE EXCEPTION 'audit events are append-only'; END;
            $$ LANGUAGE plpgsql;
            """
        )
        schema_editor.execute(
            f"CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON {TABLE} "
            "FOR EACH ROW EXECUTE FUNCTION audit_append_only();"
        )
    elif vendor == "sqlite":
        # UPDATE only: Django's test flush on SQLite is a DELETE; cut-off entries are
        # caught by the chain head check instead.
        schema_editor.execute(
            f"CREATE TRIGGER audit_no_update BEFORE UPDATE ON {TABLE} "
            "BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;"
        )


def backwards(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(f"DROP TRIGGER IF EXISTS audit_append_only ON {TABLE};")
    elif vendor == "sqlite":
        schema_editor.execute("DROP TRIGGER IF EXISTS audit_no_update;")


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]
    operations = [migrations.RunPython(forwards, backwards)]
