"""STOW-RS (PS3.18 10.5): store instances sent as ``multipart/related; type="application/dicom"``.

Each part is streamed to a spool file and handed to the one ingest path
(:func:`imaging.ingest.ingest`); a bad part is refused with a reason while the good parts of
the same request are stored. The answer is the PS3.18 store response: 200 when every
instance is stored, 202 when some failed or carry warnings, 409 when none was stored.

A body over ``STOW_MAX_REQUEST_BYTES`` is refused with 413 (up front when its length is
announced; counted as it streams when chunked), and a part over ``INGEST_MAX_OBJECT_BYTES``
is read past and reported as a failed SOP entry (Out of Resources) while the other parts
are stored.

Re-sending an instance already held with the same bytes succeeds (STOW is idempotent); the
same SOP Instance UID with other bytes is refused as a duplicate and the original kept.

Whoever may not store (a doctor) may still add structured reports to the studies she may
read, as OHIF's "Create report" does: each part is checked by
:func:`imaging.added_reports.check` and refused as Not Authorized (0124H) otherwise.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import IO, Any

from django.conf import settings
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.urls import reverse

from audit.models import AuditAction, Outcome
from audit.trail import Actor, Target, record
from imaging import added_reports, policies, principals
from imaging.ingest import WRONG_STUDY, IngestBatch, IngestResult
from imaging.ingest import Outcome as IngestOutcome
from imaging.store_audit import StoreAudit

from . import auth
from .multipart import ContentType, MultipartError, Part, iter_parts
from .renderers import dicom_json_response, problem

log = logging.getLogger(__name__)

DICOM = "application/dicom"

# FailureReason (0008,1197) values, PS3.4 C.4.2.1.4 and PS3.7 C.
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH = 0xA900  # also: does not belong to the study in the target URL
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
SOP_CLASS_NOT_SUPPORTED = 0x0122
NOT_AUTHORIZED = 0x0124  # Refused: Not Authorized (PS3.4 Table GG.4-1)

# Tags of the store response (PS3.18 Table 10.5.3-2).
RETRIEVE_URL = "00081190"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_CLASS_UID = "00081150"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"
ERROR_COMMENT = "00000902"


def store(request: HttpRequest, study: str | None) -> HttpResponse:
    """``POST /studies`` and ``POST /studies/{study}``."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    refused = auth.authenticate(request)
    if refused is not None:
        return refused
    actor = Actor.from_request(request)
    principal = principals.of_request(request)
    # Who may not store images may still add reports to the studies she reads (a
    # doctor's measurements from OHIF): each part is then checked by added_reports.
    reports_only = not policies.decide(principal, policies.Action.STORE)
    if reports_only and not policies.decide(principal, policies.Action.ADD_REPORT):
        record(AuditAction.STORE, actor, Target("study", study or ""), Outcome.DENIED,
               reason="may not store")
        return problem(HTTPStatus.FORBIDDEN, "this account may not store instances")

    content_type = ContentType.parse(request.META.get("CONTENT_TYPE", ""))
    if content_type.media_type != "multipart/related":
        return problem(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                       'send multipart/related; type="application/dicom"')
    root_type = content_type.params.get("type", DICOM).lower()
    if root_type != DICOM:
        return problem(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            f"parts of type {root_type} (metadata and bulk data) are not accepted; "
            'send the instances as multipart/related; type="application/dicom"',
        )
    boundary = content_type.params.get("boundary", "")
    if not boundary:
        return problem(HTTPStatus.BAD_REQUEST, "multipart/related without a boundary")
    if request.META.get("CONTENT_LENGTH", "") in ("0",) or not _has_body(request):
        return problem(HTTPStatus.BAD_REQUEST, "empty body: no instances to store")
    limit = settings.STOW_MAX_REQUEST_BYTES
    if _declared_length(request) > limit:
        return problem(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, _request_too_large(limit))

    base = request.build_absolute_uri(reverse("dicomweb:studies"))
    referenced: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    study_uids: set[str] = set()
    source = f"stow:{request.user.get_username()}"
    parts = 0
    batch = _Batch(actor, base, referenced, failed, study_uids, principal,
                   reports_only=reports_only)
    reader = _BoundedReader(_reader(request), limit)
    try:
        for part in iter_parts(reader, boundary,
                               max_part_bytes=settings.INGEST_MAX_OBJECT_BYTES):
            parts += 1
            with part.file:
                _store_part(part, study, source, batch, failed)
            if len(batch.staged) >= STORE_BATCH:
                batch.commit()
        batch.commit()
    except RequestTooLarge:
        # A chunked body with no length announced: read no further. Whole parts before the
        # limit are stored; the one it cut and all after it are not.
        batch.commit()
        if not referenced:
            return problem(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, _request_too_large(limit))
        failed.append(_failed("", "", OUT_OF_RESOURCES, _request_too_large(limit)))
        parts = max(parts, 1)
    except MultipartError as exc:
        batch.commit()
        if not referenced and not failed:
            return problem(HTTPStatus.BAD_REQUEST, f"malformed multipart body: {exc}")
        # A body cut off after some parts: keep what arrived whole, report the rest.
        failed.append(_failed("", "", CANNOT_UNDERSTAND, f"malformed multipart body: {exc}"))
    if parts == 0:
        return problem(HTTPStatus.BAD_REQUEST, "the body holds no parts: no instances to store")

    response: dict[str, Any] = {}
    target_study = study or (next(iter(study_uids)) if len(study_uids) == 1 else None)
    if target_study:
        response[RETRIEVE_URL] = {"vr": "UR", "Value": [f"{base}/{target_study}"]}
    if failed:
        response[FAILED_SOP_SEQUENCE] = {"vr": "SQ", "Value": failed}
    if referenced:
        response[REFERENCED_SOP_SEQUENCE] = {"vr": "SQ", "Value": referenced}
    if not referenced:
        status = HTTPStatus.CONFLICT
    elif failed or any(WARNING_REASON in item for item in referenced):
        status = HTTPStatus.ACCEPTED
    else:
        status = HTTPStatus.OK
    return dicom_json_response(request, response, status=status)


class RequestTooLarge(Exception):
    """The body went past ``STOW_MAX_REQUEST_BYTES`` while it was read."""


class _BoundedReader:
    """``read(n)`` that counts what it gives and stops at ``limit``: a chunked body
    announces no length, so it is counted as it streams.

    The bytes up to the limit are given (parts that end before it are stored); the next
    read raises :class:`RequestTooLarge`.
    """

    def __init__(self, read: Any, limit: int) -> None:
        self._read, self._limit, self.count = read, limit, 0

    def __call__(self, size: int) -> bytes:
        if self.count >= self._limit:
            if self._read(1):
                raise RequestTooLarge
            return b""
        data: bytes = self._read(min(size, self._limit - self.count))
        self.count += len(data)
        return data


def _declared_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def _request_too_large(limit: int) -> str:
    return (f"the request body is larger than the limit of {limit} bytes "
            "(STOW_MAX_REQUEST_BYTES); send the instances in several requests")


def _has_body(request: HttpRequest) -> bool:
    if request.META.get("CONTENT_LENGTH"):
        return True
    return _chunked(request)


def _chunked(request: HttpRequest) -> bool:
    """A chunked body the server has de-chunked for us (gunicorn sets input_terminated)."""
    return bool(
        not request.META.get("CONTENT_LENGTH")
        and "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
        and request.META.get("wsgi.input_terminated")
    )


def _reader(request: HttpRequest) -> Any:
    if _chunked(request):
        stream: IO[bytes] = request.META["wsgi.input"]
        return stream.read
    return request.read


STORE_BATCH = 32  # parts indexed per database transaction


class _Batch:
    """Parts ingested together (one transaction per batch, see imaging.ingest.IngestBatch);
    their results become the store response and one audit entry per study."""

    def __init__(self, actor: Actor, base: str, referenced: list[dict[str, Any]],
                 failed: list[dict[str, Any]], study_uids: set[str],
                 principal: principals.Principal, *, reports_only: bool = False) -> None:
        self.actor, self.base = actor, base
        self.referenced, self.failed, self.study_uids = referenced, failed, study_uids
        self.principal, self.reports_only = principal, reports_only
        # Entries with the rows; within the sender's clinics, or, for reports only, into
        # the studies added_reports found the sender may add to (no new patient).
        audit = (StoreAudit(actor, "stow-rs", principal=principal) if reports_only
                 else StoreAudit.within(actor, "stow-rs", principal))
        self.staged = IngestBatch(audit)
        self.sop_classes: list[tuple[str, str]] = []

    def add(self, fp: IO[bytes], source: str, study: str | None) -> None:
        self.sop_classes.append(self.staged.add(fp, source=source, study=study))

    def commit(self) -> None:
        if not len(self.staged):
            return
        try:
            results = self.staged.commit()
        except OSError as exc:
            log.exception("STOW parts could not be stored")
            self._fail_all(OUT_OF_RESOURCES, f"storage error: {exc}")
            return
        except Exception:
            log.exception("STOW parts failed")
            close_old_connections()
            self._fail_all(PROCESSING_FAILURE, "processing failure while storing")
            return
        finally:
            announced, self.sop_classes = self.sop_classes, []
        for (sop_class, sop_uid), result in zip(announced, results, strict=True):
            self._report(sop_class or result.sop_class_uid, sop_uid, result)

    def _fail_all(self, code: int, comment: str) -> None:
        for sop_class, sop_uid in self.sop_classes:
            self.failed.append(_failed(sop_class, sop_uid, code, comment))
            record(AuditAction.STORE, self.actor, Target("instance", sop_uid), Outcome.FAILED,
                   reason=comment, detail={"via": "stow-rs"})
        self.sop_classes = []

    def _report(self, sop_class: str, sop_uid: str, result: IngestResult) -> None:
        if result.accepted:
            self.study_uids.add(result.study_instance_uid)
            url = (f"{self.base}/{result.study_instance_uid}/series/"
                   f"{result.series_instance_uid}/instances/{result.sop_instance_uid}")
            self.referenced.append({
                REFERENCED_SOP_CLASS_UID: _ui(sop_class),
                REFERENCED_SOP_INSTANCE_UID: _ui(result.sop_instance_uid),
                RETRIEVE_URL: {"vr": "UR", "Value": [url]},
            })
        elif result.outcome == IngestOutcome.CONFLICT:
            self.failed.append(_failed(sop_class, result.sop_instance_uid,
                                       DUPLICATE_SOP_INSTANCE, result.reason))
        else:
            self.failed.append(_failed(sop_class, result.sop_instance_uid or sop_uid,
                                       _rejection_code(result.reason), result.reason))


def _store_part(
    part: Part, study: str | None, source: str, batch: _Batch, failed: list[dict[str, Any]],
) -> None:
    part_type = ContentType.parse(part.content_type or DICOM).media_type
    if part_type != DICOM:
        failed.append(_failed("", "", CANNOT_UNDERSTAND,
                              f"part of type {part_type}, expected {DICOM}"))
        return
    if part.size == 0:
        failed.append(_failed("", "", CANNOT_UNDERSTAND, "empty part"))
        return
    if part.oversized:
        limit = settings.INGEST_MAX_OBJECT_BYTES
        failed.append(_failed("", "", OUT_OF_RESOURCES,
                              f"the instance ({part.size} bytes) is larger than the limit of "
                              f"{limit} bytes (INGEST_MAX_OBJECT_BYTES); not stored"))
        return
    if batch.reports_only:
        checked = added_reports.check(batch.principal, part.file)
        if isinstance(checked, added_reports.Refusal):
            failed.append(_failed(checked.sop_class_uid, checked.sop_instance_uid,
                                  NOT_AUTHORIZED, checked.reason))
            record(AuditAction.STORE, batch.actor,
                   Target("instance", checked.sop_instance_uid,
                          study_uid=checked.study_uid),
                   Outcome.DENIED, reason=checked.why, detail={"via": "stow-rs"})
            return
        study = study or checked  # ingest holds the object to the study checked
    try:
        batch.add(part.file, source, study)
    except OSError as exc:
        log.exception("STOW part could not be stored")
        failed.append(_failed("", "", OUT_OF_RESOURCES, f"storage error: {exc}"))


def _rejection_code(reason: str) -> int:
    """Objects ingest could read but whose content is inconsistent, versus unreadable ones."""
    if (reason.startswith(("pixel data", WRONG_STUDY))
            or "already belongs to another study" in reason):
        return DATASET_DOES_NOT_MATCH
    return CANNOT_UNDERSTAND


def _ui(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def _failed(sop_class: str, sop_uid: str, reason: int, comment: str) -> dict[str, Any]:
    return {
        ERROR_COMMENT: {"vr": "LO", "Value": [comment]},
        REFERENCED_SOP_CLASS_UID: _ui(sop_class),
        REFERENCED_SOP_INSTANCE_UID: _ui(sop_uid),
        FAILURE_REASON: {"vr": "US", "Value": [reason]},
    }

