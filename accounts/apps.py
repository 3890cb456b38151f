from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from . import tokens
        from .models import User

        post_save.connect(tokens.on_user_saved, sender=User,
                          dispatch_uid="accounts.tokens.on_user_saved")
