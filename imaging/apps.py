from django.apps import AppConfig


class ImagingConfig(AppConfig):
    name = "imaging"
    verbose_name = "Imaging archive"

    def ready(self) -> None:
        from pydicom import config

        # The archive keeps objects as received; value checks on read only add noise, and
        # the checks that matter are made explicitly in imaging.dicomfile.
        config.settings.reading_validation_mode = config.IGNORE
