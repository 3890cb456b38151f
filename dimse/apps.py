from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class DimseConfig(AppConfig):
    name = "dimse"
    verbose_name = "DICOM listener"

    def ready(self) -> None:
        from .models import Peer
        from .peers import peer_changed

        post_save.connect(peer_changed, sender=Peer, dispatch_uid="dimse.peer_changed")
        post_delete.connect(peer_changed, sender=Peer, dispatch_uid="dimse.peer_changed_del")
