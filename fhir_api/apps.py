from django.apps import AppConfig


class FhirApiConfig(AppConfig):
    name = "fhir_api"
    label = "fhir_api"
    verbose_name = "FHIR"
