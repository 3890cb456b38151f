from typing import Any

from django.apps import AppConfig
from django.db import transaction
from django.db.models.signals import post_delete


def _forget_frames(sender: Any, instance: Any, **kwargs: Any) -> None:
    """A deleted object's compressed frames leave the frame cache once the delete commits."""
    from . import frame_codecs

    sha256 = instance.sha256
    transaction.on_commit(lambda: frame_codecs.forget_deleted([sha256]))


class DicomwebConfig(AppConfig):
    name = "dicomweb"
    verbose_name = "DICOMweb"

    def ready(self) -> None:
        post_delete.connect(_forget_frames, sender="imaging.Instance",
                            dispatch_uid="dicomweb.forget_frames")
