"""The CapabilityStatement (``/fhir/metadata``): what this server offers, built from the
same table the searches run from, so it cannot drift from them. No patient data."""

from __future__ import annotations

from django.utils import timezone
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from .resources import Urls
from .searches import KINDS

#: The models are fhir.resources' R4B, whose resources served here are R4's.
FHIR_VERSION = "4.3.0"
SECURITY = "http://terminology.hl7.org/CodeSystem/restful-security-service"


def statement(urls: Urls) -> CapabilityStatement:
    return CapabilityStatement.model_validate(dict(
        status="active",
        date=timezone.now(),
        kind="instance",
        software={"name": "imaging-portal"},
        implementation={"description": "Imaging portal: read-only FHIR over the archive",
                        "url": urls.fhir},
        fhirVersion=FHIR_VERSION,
        format=["json"],
        rest=[{
            "mode": "server",
            "security": {
                "service": [{"coding": [{"system": SECURITY, "code": "Basic"}]},
                            {"coding": [{"system": SECURITY, "code": "OAuth",
                                         "display": "Bearer API token"}]}],
                "description": "HTTP Basic (accounts without a second factor), a bearer "
                               "API token or the portal session, as DICOMweb.",
            },
            "resource": [{
                "type": kind.name,
                "interaction": [{"code": "read"}, {"code": "search-type"}],
                "searchParam": [{"name": name, "type": kind_type}
                                for name, kind_type in kind.parameters.items()
                                if ":" not in name and "." not in name],
            } for kind in KINDS.values()],
        }],
    ))
