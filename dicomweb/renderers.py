"""Media types of DICOMweb responses, as DRF-style renderers, and the responses built on them.

DICOM JSON (PS3.18 F.2) is rendered compactly, always UTF-8 and so without a charset
parameter (some clients compare the media type exactly); it is gzip-compressed when the
client accepts it and the body is big enough for compression to pay.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_vary_headers
from django.utils.text import compress_string
from rest_framework.renderers import BaseRenderer

DICOM_JSON = "application/dicom+json"
GZIP_MIN_BYTES = 512


class DicomJSONRenderer(BaseRenderer):
    media_type = DICOM_JSON
    format = "dcm.json"
    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


class ProblemRenderer(BaseRenderer):
    """Errors carry a short human-readable message (PS3.18 allows any payload)."""

    media_type = "application/json"
    format = "json"
    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        return json.dumps(data, ensure_ascii=False).encode()


def accepts_gzip(request: HttpRequest) -> bool:
    codings = request.META.get("HTTP_ACCEPT_ENCODING", "")
    for coding in codings.split(","):
        name, _, params = coding.strip().partition(";")
        if name.strip().lower() in ("gzip", "*") and params.replace(" ", "") != "q=0":
            return True
    return False


def dicom_json_response(
    request: HttpRequest, data: Any, *, status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HttpResponse:
    body = DicomJSONRenderer().render(data)
    response = HttpResponse(
        status=status, content_type=DICOM_JSON, headers=headers
    )
    if len(body) >= GZIP_MIN_BYTES and accepts_gzip(request):
        body = compress_string(body)
        response["Content-Encoding"] = "gzip"
    patch_vary_headers(response, ("Accept-Encoding",))
    response.content = body
    return response


def problem(status: int, message: str, *, headers: Mapping[str, str] | None = None
            ) -> HttpResponse:
    """An error response: the status by name at the call site, and a message saying why."""
    return HttpResponse(
        ProblemRenderer().render({"error": message}), status=status,
        content_type="application/json", headers=headers,
    )
