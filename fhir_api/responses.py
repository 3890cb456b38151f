"""FHIR's media type and its error shape: resources as ``application/fhir+json``, serialized
by their ``fhir.resources`` models, and every error as an OperationOutcome.

JSON is the one format. ``_format`` (``json``, ``application/json``,
``application/fhir+json``) overrides ``Accept``, as FHIR says; asking only for XML or
anything else is a 406.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from http import HTTPStatus

from django.http import HttpRequest, HttpResponse
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir_core.fhirabstractmodel import FHIRAbstractModel

FHIR_JSON = "application/fhir+json"
CONTENT_TYPE = f"{FHIR_JSON}; charset=utf-8"
JSON_FORMATS = {"json", "application/json", FHIR_JSON, "application/json+fhir"}
ACCEPTABLE = JSON_FORMATS | {"*/*", "application/*"}


def acceptable(request: HttpRequest) -> bool:
    wanted = request.GET.get("_format", "").strip().lower()
    if wanted:
        return wanted.split(";")[0].strip() in JSON_FORMATS
    accept = request.headers.get("Accept", "")
    if not accept.strip():
        return True
    for item in accept.split(","):
        media_type, _, params = item.strip().partition(";")
        if media_type.strip().lower() in ACCEPTABLE and params.replace(" ", "") != "q=0":
            return True
    return False


def resource_response(resource: FHIRAbstractModel, *, status: int = HTTPStatus.OK,
                      headers: Mapping[str, str] | None = None) -> HttpResponse:
    return HttpResponse(resource.model_dump_json(), status=status, content_type=CONTENT_TYPE,
                        headers=headers)


#: OperationOutcome issue codes by HTTP status.
ISSUE_CODES = {
    HTTPStatus.BAD_REQUEST: "invalid",
    HTTPStatus.UNAUTHORIZED: "login",
    HTTPStatus.FORBIDDEN: "forbidden",
    HTTPStatus.NOT_FOUND: "not-found",
    HTTPStatus.METHOD_NOT_ALLOWED: "not-supported",
    HTTPStatus.NOT_ACCEPTABLE: "not-supported",
}


def outcome(status: HTTPStatus, message: str, *,
            headers: Mapping[str, str] | None = None) -> HttpResponse:
    """An error: the status by name at the call site, and an issue saying why."""
    resource = OperationOutcome.model_validate(dict(issue=[{
        "severity": "error", "code": ISSUE_CODES.get(status, "processing"),
        "diagnostics": message,
    }]))
    return resource_response(resource, status=status, headers=headers)


def outcome_from_problem(problem: HttpResponse) -> HttpResponse:
    """DICOMweb's authentication refusal (401/403 with ``{"error": ...}``), as FHIR's."""
    try:
        message = str(json.loads(problem.content).get("error", ""))
    except (ValueError, AttributeError):
        message = ""
    headers = {k: v for k, v in problem.items() if k.lower() == "www-authenticate"}
    return outcome(HTTPStatus(problem.status_code), message or "not authenticated",
                   headers=headers)
