from django.apps import AppConfig
from django.conf import settings
from django.db.models.signals import pre_delete


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit trail"

    def ready(self) -> None:
        from . import actors, model_changes

        model_changes.register()
        pre_delete.connect(actors.refuse_deleting_users_on_the_trail,
                           sender=settings.AUTH_USER_MODEL,
                           dispatch_uid="audit.refuse_deleting_users_on_the_trail")
