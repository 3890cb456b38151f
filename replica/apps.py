"""The archive's second copy: every stored object encrypted on the client side and kept on
an S3-compatible replica, checked, repaired and restored by drills."""
from typing import Any

from django.apps import AppConfig
from django.core import checks
from django.utils.translation import gettext_lazy as _


def replica_keys_check(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Refuse to replicate under a key that cannot be read: every object written with it
    would be lost to the replica."""
    from replica.keys import check_keys

    return [checks.Error(problem, hint="see REPLICA_KEYS in README.md; manage.py "
                         "replica_keygen prints a new key", id="replica.E001")
            for problem in check_keys()]


class ReplicaConfig(AppConfig):
    name = "replica"
    verbose_name = _("Replica and copies")

    def ready(self) -> None:
        checks.register(replica_keys_check, checks.Tags.security)
