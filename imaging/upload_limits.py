"""Caps on a staff browser upload, applied while Django parses the multipart body.

Django's parser writes each file of a request to memory or a temporary file before the
view sees any of them, so the caps must act inside the parse, not after it. The upload view
refuses a body whose announced length is over ``UPLOAD_MAX_REQUEST_BYTES`` before reading
it (:func:`refusal_before_reading`); :class:`UploadLimits`, installed ahead of Django's own
handlers, counts the file bytes as they arrive, so a body that brings more than it
announced is stopped as well (``StopUpload``: the file being written is closed and its
temporary file removed, and the view keeps none of the files before it). A single file past
``INGEST_MAX_OBJECT_BYTES`` is dropped as it streams (``SkipFile``) and reported as that
file's refusal while the other files of the request go through. A ZIP archive is exempt from
the per-object cap: it is not an object, and its members are capped as they are unpacked
(:mod:`imaging.sources`).

Form fields (the ``path`` beside each file) are not counted here: Django bounds them with
``DATA_UPLOAD_MAX_MEMORY_SIZE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, SkipFile, StopUpload
from django.http import HttpRequest
from django.utils.translation import gettext as _

from .sources import too_large


def request_too_large() -> str:
    """Why a body over ``UPLOAD_MAX_REQUEST_BYTES`` is refused (the page shows it)."""
    return _("The upload is larger than the limit of %(limit)s bytes "
             "(UPLOAD_MAX_REQUEST_BYTES); nothing of it was stored. Send it as smaller "
             "files or ZIP archives.") % {"limit": settings.UPLOAD_MAX_REQUEST_BYTES}


def length_required() -> str:
    return _("The upload does not announce its length (Content-Length), so it cannot be "
             "checked against the limit of %(limit)s bytes (UPLOAD_MAX_REQUEST_BYTES) before "
             "it is read. Send it with its length, as browsers do.") % {
                 "limit": settings.UPLOAD_MAX_REQUEST_BYTES}


def refusal_before_reading(request: HttpRequest) -> tuple[HTTPStatus, str] | None:
    """``(status, reason)`` when a POST must be refused from its headers alone.

    A body without a length (chunked) is refused rather than read: Django's multipart
    parser takes a missing ``Content-Length`` as an empty body, so such an upload would
    otherwise come back as "no file was sent".
    """
    try:
        length = int(request.META.get("CONTENT_LENGTH") or "")
    except ValueError:
        length = -1
    if length < 0:
        return HTTPStatus.LENGTH_REQUIRED, length_required()
    if length > settings.UPLOAD_MAX_REQUEST_BYTES:
        return HTTPStatus.REQUEST_ENTITY_TOO_LARGE, request_too_large()
    return None


@dataclass
class Received:
    """A file the parser met, in the order of the body; ``refusal`` when it was dropped."""

    field_name: str
    name: str
    refusal: str = ""


class UploadLimits(FileUploadHandler):
    """Counts what each file and the whole request bring; stops at the caps.

    It stores nothing itself (``file_complete`` gives ``None``), so Django's own handlers
    after it keep the files; ``received`` lists every file, the dropped ones with why.
    """

    def __init__(self, request: HttpRequest | None = None) -> None:
        super().__init__(request)
        self.request_limit: int = settings.UPLOAD_MAX_REQUEST_BYTES
        self.object_limit: int = settings.INGEST_MAX_OBJECT_BYTES
        self.received: list[Received] = []
        self.counted = 0
        self.too_large = False
        self._object_capped = True

    def new_file(self, field_name: str, file_name: str, *args: object,
                 **kwargs: object) -> None:
        self.field_name, self.file_name = field_name, file_name
        self._object_capped = not file_name.lower().endswith(".zip")
        self.received.append(Received(field_name, file_name))

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        self.counted += len(raw_data)
        if self.counted > self.request_limit:
            # Read no further: whatever is left of the body is not ours to spool.
            self.too_large = True
            raise StopUpload(connection_reset=True)
        if self._object_capped and start + len(raw_data) > self.object_limit:
            self.received[-1].refusal = too_large()
            raise SkipFile
        return raw_data

    def file_complete(self, file_size: int) -> UploadedFile | None:
        return None
