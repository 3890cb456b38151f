"""Which models' changes django-auditlog records (who changed what, before and after).

Archive rows (studies, series, instances) change only through ingest and purge, which write
their own entries to the access trail; registering them here would double every ingest.
"""

from auditlog.registry import auditlog
from django.apps import apps

TRACKED = {
    "accounts.User": {"exclude_fields": ["password", "last_login"]},
    "accounts.Clinic": {},
    "accounts.AccessGrant": {},
    "accounts.BreakGlassAccess": {},
    "accounts.Consent": {},
    "imaging.Patient": {},
    "imaging.PatientConflict": {},
    "privacy.LegalHold": {},
    "privacy.PurgeRequest": {},
}


def register() -> None:
    for label, options in TRACKED.items():
        model = apps.get_model(label)
        if not auditlog.contains(model):
            auditlog.register(model, **options)
