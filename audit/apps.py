from django.apps import AppConfig
from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.db.models.signals import pre_delete


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit trail"

    def ready(self) -> None:
        from . import actors, auth_events, model_changes

        model_changes.register()
        pre_delete.connect(actors.refuse_deleting_users_on_the_trail,
                           sender=settings.AUTH_USER_MODEL,
                           dispatch_uid="audit.refuse_deleting_users_on_the_trail")
        user_logged_in.connect(auth_events.signed_in, dispatch_uid="audit.signed_in")
        user_login_failed.connect(auth_events.sign_in_failed,
                                  dispatch_uid="audit.sign_in_failed")
