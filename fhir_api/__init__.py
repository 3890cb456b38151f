"""A read-only FHIR R4 API (``/fhir/``) over the archive: ImagingStudy, Patient and final
DiagnosticReports, behind DICOMweb's authentication, access policy and audit.

The package is not named ``fhir``: that is the top-level package of ``fhir.resources``,
which a local ``fhir`` package would shadow.
"""
