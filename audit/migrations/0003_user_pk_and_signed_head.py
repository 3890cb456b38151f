"""The actor's id becomes a plain integer, and the chain head gets a keyed signature.

``AuditEvent.user`` was a foreign key with ``on_delete=SET_NULL``: deleting a user issued an
UPDATE on chained entries. ``user_pk`` keeps the same column (``user_id``) and values, so
this changes Django's state only; no entry is rewritten and every hash still verifies.

The current head (and a checkpoint at every ``CHECKPOINT_EVERY``-th existing entry) is
signed with the chain key configured when this runs: set ``AUDIT_CHAIN_KEY`` first.
"""

from django.db import migrations, models


def sign_existing(apps, schema_editor):
    from audit import chain

    head_model = apps.get_model("audit", "ChainHead")
    event_model = apps.get_model("audit", "AuditEvent")
    checkpoint_model = apps.get_model("audit", "AuditCheckpoint")
    head, _ = head_model.objects.get_or_create(pk=1)
    every = chain.CHECKPOINT_EVERY
    rows = (event_model.objects.filter(seq__in=range(every, head.seq + 1, every))
            .values_list("seq", "entry_hash", "at"))
    checkpoint_model.objects.bulk_create(
        checkpoint_model(seq=seq, entry_hash=digest, at=at, signature=chain.sign(seq, digest))
        for seq, digest, at in rows
    )
    head_model.objects.filter(pk=1).update(signature=chain.sign(head.seq, head.entry_hash))


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_append_only")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveField(model_name="auditevent", name="user"),
                migrations.AddField(
                    model_name="auditevent", name="user_pk",
                    field=models.BigIntegerField(blank=True, db_column="user_id",
                                                 db_index=True, null=True,
                                                 verbose_name="user"),
                ),
            ],
            database_operations=[],
        ),
        migrations.AddField(
            model_name="chainhead", name="signature",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.CreateModel(
            name="AuditCheckpoint",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True,
                                           serialize=False, verbose_name="ID")),
                ("seq", models.PositiveBigIntegerField(unique=True)),
                ("entry_hash", models.CharField(max_length=64)),
                ("signature", models.CharField(max_length=64)),
                ("at", models.DateTimeField()),
            ],
            options={"ordering": ["seq"]},
        ),
        migrations.RunPython(sign_existing, migrations.RunPython.noop),
    ]
