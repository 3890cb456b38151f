"""Every API token expires: tokens made without an expiry get 90 days from now."""

import datetime

from django.db import migrations, models
from django.utils import timezone


def give_expiry(apps, schema_editor):
    ApiToken = apps.get_model("accounts", "ApiToken")
    ApiToken.objects.filter(expires__isnull=True).update(
        expires=timezone.now() + datetime.timedelta(days=90))


class Migration(migrations.Migration):
    dependencies = [("accounts", "0003_api_tokens")]

    operations = [
        migrations.RunPython(give_expiry, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="apitoken", name="expires",
            field=models.DateTimeField(verbose_name="expires"),
        ),
    ]
