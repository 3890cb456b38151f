"""WADO-RS (PS3.18 10.4): instances, metadata, frames, rendered images and bulk data.

Every resource follows the same steps: authenticate (:mod:`dicomweb.auth`), negotiate the
representation from ``Accept`` (:mod:`dicomweb.negotiation`, 406 when none can be given),
then ask the one access policy through :func:`imaging.access.get_or_404`, which also writes
the audit entry; unknown UIDs, UIDs of another patient and UIDs that are not under the
study (and series) in the URL all answer 404. Bodies are streamed from the blob storage;
nothing holds a whole study in memory.

Decisions worth knowing:

- Without ``transfer-syntax``, instances come in Explicit VR Little Endian, the default of
  PS3.18: objects stored otherwise (JPEG-LS, JPEG 2000, RLE, implicit VR) are transcoded
  losslessly into a copy that is streamed and kept in the frame cache (by the stored
  object's SHA-256 and the target) for the next client, as is a copy in a syntax named
  with ``transfer-syntax``; the stored blob is never changed. An object no installed codec
  can decode is then sent as stored, its part naming its transfer syntax.
  ``transfer-syntax=*`` (dicomweb-client, OHIF) sends every object exactly as stored.
- Frames stored uncompressed go out losslessly compressed when the client names JPEG-LS,
  RLE, JPEG 2000 lossless or HTJ2K lossless, and for ``transfer-syntax=*`` (OHIF) from
  outside ``WADO_FRAMES_LAN_NETWORKS`` as ``WADO_FRAMES_ANY_SYNTAX`` (JPEG-LS): encoded
  once, then read from the frame cache (:mod:`dicomweb.frame_codecs`). A frame no codec
  represents exactly goes uncompressed. On the LAN, ``*`` gets the frames as stored.
- Bare datasets (received over DIMSE without File Meta Information) are sent with a
  generated Part 10 header in front of their stored bytes, because ``application/dicom``
  is the PS3.10 file format.
- ``BulkDataURI`` values are stored relative to the instance and made absolute here from
  the request, so they follow ``X-Forwarded-Host``/``-Proto`` behind a proxy when
  ``USE_X_FORWARDED_HOST`` and ``SECURE_PROXY_SSL_HEADER`` are set.
"""

from __future__ import annotations

import logging
import re
import secrets
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from functools import wraps
from http import HTTPStatus
from typing import IO, Any, Concatenate, ParamSpec, cast

from django.conf import settings
from django.db.models import F, QuerySet, TextField
from django.db.models.functions import Cast
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from audit.models import AuditAction
from audit.trail import Actor
from imaging import access, blobs, principals
from imaging.models import Instance, Series, Study
from portal.client_address import from_networks

from . import auth, frame_codecs, rendering, resume
from . import frames as pixels
from .negotiation import ANY_TRANSFER_SYNTAX, Choice, NotAcceptable, Offer, negotiate
from .renderers import DICOM_JSON, accepts_gzip, problem

log = logging.getLogger(__name__)

DICOM = "application/dicom"
OCTET_STREAM = pixels.OCTET_STREAM
GZIP_LEVEL = 4
METADATA_BATCH = 200
# "BulkDataURI": "bulkdata/...  as Django (SQLite) and PostgreSQL (jsonb) write it.
_RELATIVE_BULK = re.compile(r'"BulkDataURI":\s*"bulkdata/')

P = ParamSpec("P")


class NotFound(Exception):
    """A 404 with a message (the object exists for the caller but the part asked does not)."""


def _endpoint(
    view: Callable[Concatenate[HttpRequest, P], HttpResponseBase],
) -> Callable[Concatenate[HttpRequest, P], HttpResponse]:
    """Authenticate, then turn the domain errors into status codes with a message.

    ``dicomweb.views`` types its answers as ``HttpResponse``; streaming answers are
    ``StreamingHttpResponse``, which Django serves alike, hence the one cast here.
    """

    def wrapper(request: HttpRequest, *args: P.args, **kwargs: P.kwargs) -> HttpResponse:
        refusal = auth.authenticate(request)
        if refusal is not None:
            return refusal
        try:
            return cast(HttpResponse, view(request, *args, **kwargs))
        except Http404:
            return problem(HTTPStatus.NOT_FOUND, "no such object")
        except NotFound as exc:
            return problem(HTTPStatus.NOT_FOUND, str(exc))
        except NotAcceptable as exc:
            return problem(HTTPStatus.NOT_ACCEPTABLE, str(exc))
        except pixels.FrameError as exc:
            return problem(HTTPStatus.BAD_REQUEST, str(exc))
        except pixels.CannotTranscode as exc:
            return problem(HTTPStatus.NOT_ACCEPTABLE, str(exc))

    return wraps(view)(wrapper)  # type: ignore[return-value]


# --- Access ---------------------------------------------------------------------------------


def _resolve(
    request: HttpRequest, action: AuditAction, study: str, series: str | None,
    instance: str | None, *, session: bool = False,
) -> Study | Series | Instance:
    """The object at the URL's level if the caller may ``action`` it; 404 otherwise.

    The policy check and audit entry come from ``access.get_or_404``; a series or instance
    that exists but is not under the study (and series) in the URL is a 404 as well. With
    ``session`` (frames, rendered images, single instances: what a viewer asks for one by
    one) allowed reads are counted on the caller's viewing session of the study.
    """
    actor = Actor.from_request(request)
    if instance is not None:
        obj = access.get_or_404(principals.of_request(request), actor, action, "instance",
                                instance, session=session)
        assert isinstance(obj, Instance)
        if (obj.series.series_instance_uid != series
                or obj.series.study.study_instance_uid != study):
            raise Http404
        return obj
    if series is not None:
        found = access.get_or_404(principals.of_request(request), actor, action, "series",
                                  series, session=session)
        assert isinstance(found, Series)
        if found.study.study_instance_uid != study:
            raise Http404
        return found
    top = access.get_or_404(principals.of_request(request), actor, action, "study", study,
                            session=session)
    assert isinstance(top, Study)
    return top


def _instances(obj: Study | Series | Instance) -> QuerySet[Instance]:
    """The instances under ``obj`` in viewing order: series number, instance number."""
    if isinstance(obj, Instance):
        qs = Instance.objects.filter(pk=obj.pk)
    elif isinstance(obj, Series):
        qs = Instance.objects.filter(series=obj)
    else:
        qs = Instance.objects.filter(series__study=obj)
    return qs.order_by(
        F("series__series_number").asc(nulls_last=True), "series_id",
        F("instance_number").asc(nulls_last=True), "pk",
    )


def _study_uid(obj: Study | Series | Instance) -> str:
    if isinstance(obj, Study):
        return obj.study_instance_uid
    if isinstance(obj, Series):
        return obj.study.study_instance_uid
    return obj.series.study.study_instance_uid


# --- Multipart ------------------------------------------------------------------------------


def _boundary() -> str:
    return secrets.token_hex(16)


def _part_header(boundary: str, content_type: str, length: int | None) -> bytes:
    header = f"--{boundary}\r\nContent-Type: {content_type}\r\n"
    if length is not None:
        header += f"Content-Length: {length}\r\n"
    return (header + "\r\n").encode("ascii")


def _multipart_type(part_type: str, boundary: str, transfer_syntax: str | None = None) -> str:
    value = f'multipart/related; type="{part_type}"; boundary={boundary}'
    if transfer_syntax:
        value += f"; transfer-syntax={transfer_syntax}"
    return value


def _multipart(boundary: str, parts: Iterable[tuple[str, bytes]]) -> Iterator[bytes]:
    """Parts each given whole in memory (a frame, a rendered image), one after the other:
    ``parts`` is consumed lazily, so one part is held at a time."""
    for content_type, data in parts:
        yield _part_header(boundary, content_type, len(data))
        yield data
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("ascii")


# --- Instances ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Stored:
    blob_key: str
    size: int
    transfer_syntax: str
    has_file_meta: bool
    sop_class_uid: str
    sop_instance_uid: str
    sha256: str
    target: str | None  # None: the stored bytes; else the transfer syntax to transcode to
    asked: bool  # the client named ``target``; else it is the PS3.18 default


_STORED_FIELDS = ("blob_key", "size_bytes", "transfer_syntax_uid", "has_file_meta",
                  "sop_class_uid", "sop_instance_uid", "sha256")
TRANSCODE_SPOOL_BYTES = 16 * 1024 * 1024  # a transcoded copy larger than this goes to disk


def _target(wanted: str | None, stored: str) -> tuple[str | None, bool]:
    """The transfer syntax to transcode to (None: send as stored) and whether it was asked.

    No ``transfer-syntax`` means Explicit VR Little Endian (PS3.18 8.7.3.5.2); ``*`` means
    whatever is stored.
    """
    if wanted == ANY_TRANSFER_SYNTAX or wanted == stored:
        return None, False
    if wanted is None:
        return (None if stored == ExplicitVRLittleEndian else ExplicitVRLittleEndian), False
    return wanted, True


@_endpoint
def retrieve(request: HttpRequest, study: str, series: str | None = None,
             instance: str | None = None) -> HttpResponseBase:
    """Study, series or instance as ``multipart/related; type="application/dicom"``."""
    accept = request.headers.get("Accept")
    negotiate(accept, [Offer(DICOM, True)])  # 406 before touching the archive
    obj = _resolve(request, AuditAction.RETRIEVE, study, series, instance,
                   session=instance is not None)
    rows = list(_instances(obj).values_list(*_STORED_FIELDS))
    if not rows:
        raise NotFound("no instances stored here")
    stored_syntaxes = {row[2] for row in rows}

    def usable(offer: Offer, syntax: str | None) -> bool:
        return (syntax in (None, ANY_TRANSFER_SYNTAX) or syntax in stored_syntaxes
                or syntax in pixels.TRANSCODE_TARGETS)

    choice = negotiate(accept, [Offer(DICOM, True)], usable=usable)
    plan = [
        _Stored(key, size, ts, meta, sop_class, sop_uid, sha256,
                *_target(choice.transfer_syntax, ts))
        for key, size, ts, meta, sop_class, sop_uid, sha256 in rows
    ]
    boundary = _boundary()
    content_type = _multipart_type(DICOM, boundary)
    if isinstance(obj, Instance) and plan[0].target is not None:
        # One object: transcode before answering, so a failure is still a 406.
        first = _transcoded(plan[0])
        if first is None:  # no codec, no syntax asked for: as stored, as below
            plan[0] = replace(plan[0], target=None)
        else:
            return StreamingHttpResponse(_instance_parts(boundary, plan, first=first),
                                         content_type=content_type)
    if all(item.target is None for item in plan):
        # As stored: a fixed body, so it has a length and byte ranges (dicomweb.resume).
        boundary = resume.boundary(item.blob_key for item in plan)
        return resume.response(request, _segments(boundary, plan),
                               _multipart_type(DICOM, boundary), f'"{boundary}"')
    return StreamingHttpResponse(_instance_parts(boundary, plan), content_type=content_type)


def _segments(boundary: str, plan: list[_Stored]) -> list[resume.Segment]:
    """The multipart body of objects sent as stored, as :func:`_instance_parts` sends it."""
    segments = []
    for item in plan:
        prefix = _prefix(item)
        segments += [resume.Segment(_stored_part_header(boundary, item, prefix) + prefix),
                     resume.Segment(blob_key=item.blob_key, size=item.size),
                     resume.Segment(b"\r\n")]
    return [*segments, resume.Segment(f"--{boundary}--\r\n".encode("ascii"))]


def _transcoded(item: _Stored) -> IO[bytes] | None:
    """A transcoded copy of the item, open at its start: from the frame cache's disk (kept
    there for the next client, keyed by the stored object's SHA-256 and the target), or,
    with the cache off, in a spooled temporary file.

    When the client named no transfer syntax and the object cannot be decompressed (a codec
    missing), None: the stored object is sent, its part saying its transfer syntax. When
    the client asked for ``item.target``, :class:`~dicomweb.frames.CannotTranscode`.
    """
    target = item.target
    assert target is not None

    def transcode(out: IO[bytes]) -> None:
        with blobs.open_blob(item.blob_key) as fp:
            pixels.transcode(fp, target, out)

    try:
        copy = (frame_codecs.transcoded_object(item.sha256, target, transcode)
                if item.sha256 else None)
        if copy is None:
            spooled = tempfile.SpooledTemporaryFile(max_size=TRANSCODE_SPOOL_BYTES)
            try:
                transcode(cast(IO[bytes], spooled))
            except BaseException:
                spooled.close()
                raise
            spooled.seek(0)
            copy = cast(IO[bytes], spooled)
    except pixels.CannotTranscode as exc:
        if item.asked:
            raise
        log.warning("WADO-RS: %s sent as stored: %s", item.sop_instance_uid, exc)
        return None
    return copy


def _prefix(item: _Stored) -> bytes:
    if item.has_file_meta:
        return b""
    return pixels.part10_header(item.sop_class_uid, item.sop_instance_uid,
                                item.transfer_syntax)


def _stored_part_header(boundary: str, item: _Stored, prefix: bytes) -> bytes:
    return _part_header(boundary, f"{DICOM}; transfer-syntax={item.transfer_syntax}",
                        item.size + len(prefix))


def _instance_parts(boundary: str, plan: list[_Stored],
                    first: IO[bytes] | None = None) -> Iterator[bytes]:
    """Each instance's stored bytes in chunks, or its transcoded copy in chunks; never a
    whole study, and at most one transcoded object at a time.

    ``first``: the first item's transcoded copy, made before the response began.
    """
    for position, item in enumerate(plan):
        copy = first if position == 0 and first is not None else None
        if copy is None and item.target is not None:
            try:
                copy = _transcoded(item)
            except pixels.CannotTranscode as exc:
                # Headers are sent: leave this instance out rather than break the stream.
                log.warning("WADO-RS: left %s out: %s", item.sop_instance_uid, exc)
                continue
        if copy is None:
            prefix = _prefix(item)
            yield _stored_part_header(boundary, item, prefix) + prefix
            yield from blobs.iter_chunks(item.blob_key)
        else:
            with copy:
                length = copy.seek(0, 2)
                copy.seek(0)
                yield _part_header(boundary, f"{DICOM}; transfer-syntax={item.target}", length)
                while chunk := copy.read(blobs.CHUNK_SIZE):
                    yield chunk
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("ascii")


# --- Metadata -------------------------------------------------------------------------------


@_endpoint
def metadata(request: HttpRequest, study: str, series: str | None = None,
             instance: str | None = None) -> HttpResponseBase:
    """DICOM JSON of every instance under the URL, from the index (no file is opened).

    Counted on the caller's viewing session of the study, like its frames: a viewer asks
    each series' metadata before the frames, so it is part of the same viewing.
    """
    choice = negotiate(request.headers.get("Accept"),
                       [Offer(DICOM_JSON, False), Offer("application/json", False)])
    obj = _resolve(request, AuditAction.RETRIEVE, study, series, instance, session=True)
    series_base = request.build_absolute_uri(
        reverse("dicomweb:study", kwargs={"study": _study_uid(obj)})) + "/series/"
    rows = (
        _instances(obj)
        .annotate(metadata_text=Cast("metadata", TextField()))
        .values_list("series__series_instance_uid", "sop_instance_uid", "metadata_text")
        .iterator(chunk_size=METADATA_BATCH)
    )
    body = _metadata_json(rows, series_base)
    gzip = accepts_gzip(request)
    response = StreamingHttpResponse(_gzip(body) if gzip else body,
                                     content_type=f"{choice.media_type}; charset=utf-8")
    if gzip:
        response["Content-Encoding"] = "gzip"
    patch_vary_headers(response, ("Accept", "Accept-Encoding"))
    return response


def _metadata_json(rows: Iterator[tuple[str, str, str]], series_base: str) -> Iterator[bytes]:
    """``[{...},{...}]`` in batches, BulkDataURIs made absolute by text substitution.

    The stored JSON is not parsed again: the substitution only touches the object key
    ``"BulkDataURI"`` (a string value with that text would have its quotes escaped).
    """
    batch: list[str] = []
    first = True
    for series_uid, sop_uid, text in rows:
        absolute = f'"BulkDataURI": "{series_base}{series_uid}/instances/{sop_uid}/bulkdata/'
        batch.append(_RELATIVE_BULK.sub(lambda _m, a=absolute: a, text))  # type: ignore[misc]
        if len(batch) >= METADATA_BATCH:
            yield (("[" if first else ",") + ",".join(batch)).encode()
            first, batch = False, []
    yield (("[" if first else ",") + ",".join(batch) + "]").encode()


def _gzip(chunks: Iterable[bytes]) -> Iterator[bytes]:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    for chunk in chunks:
        out = compressor.compress(chunk)
        if out:
            yield out
    yield compressor.flush()


# --- Frames ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _FrameMode:
    stored: bool  # the stored encoding as is; else uncompressed little endian
    part_type: str
    encode_to: str | None = None  # native frames transcoded to this lossless syntax
    asked: bool = False  # the client named ``encode_to`` (406 if it cannot be given)


_NATIVE_PART = f"{OCTET_STREAM}; transfer-syntax={ExplicitVRLittleEndian}"
# The transfer syntax an encodable media type stands for when the client names none
# (image/jls: JPEG-LS lossless; image/jphc: HTJ2K lossless, the first listed).
_SYNTAX_OF_MEDIA = {media: syntax
                    for syntax, media in reversed(frame_codecs.ENCODABLE.items())}


def _is_native(stored_syntax: str) -> bool:
    return not UID(stored_syntax).is_compressed


def _encoded_mode(syntax: str, asked: bool) -> _FrameMode:
    return _FrameMode(False, f"{frame_codecs.ENCODABLE[syntax]}; transfer-syntax={syntax}",
                      encode_to=syntax, asked=asked)


def any_syntax_for(request: HttpRequest) -> str:
    """What native frames asked with ``transfer-syntax=*`` go out as for this client:
    as stored to one on ``WADO_FRAMES_LAN_NETWORKS`` (a LAN, where sending the stored
    frame costs less than the browser's decode of a compressed one), else
    ``WADO_FRAMES_ANY_SYNTAX`` (compressed, for remote sites on slow links)."""
    if from_networks(request, settings.WADO_FRAMES_LAN_NETWORKS):
        return "stored"
    return str(settings.WADO_FRAMES_ANY_SYNTAX)


def _frame_mode(choice: Choice, stored_syntax: str, any_syntax: str) -> _FrameMode:
    """What the frames are sent as. Native frames are transcoded when the client names a
    lossless compressed type, and for ``transfer-syntax=*`` (OHIF) to ``any_syntax``
    (:func:`any_syntax_for`); compressed frames go as stored or decoded, as before."""
    bitstream_type = pixels.media_type_of(stored_syntax)
    wanted = choice.transfer_syntax
    native = _is_native(stored_syntax)
    if choice.media_type != OCTET_STREAM:
        if native:
            return _encoded_mode(wanted if wanted in frame_codecs.ENCODABLE
                                 else _SYNTAX_OF_MEDIA[choice.media_type], True)
        return _FrameMode(True, f"{bitstream_type}; transfer-syntax={stored_syntax}")
    if native and wanted in frame_codecs.ENCODABLE:
        # application/octet-stream naming a compressed syntax: given in that syntax (with
        # its own media type), as an object stored so is given as stored.
        return _encoded_mode(wanted, True)
    if wanted == ANY_TRANSFER_SYNTAX and native and any_syntax != "stored":
        return _encoded_mode(any_syntax, False)
    if wanted == ANY_TRANSFER_SYNTAX or (wanted == stored_syntax
                                          and wanted != ImplicitVRLittleEndian):
        return _FrameMode(True, f"{bitstream_type}; transfer-syntax={stored_syntax}")
    return _FrameMode(False, _NATIVE_PART)


def _frame_offers(stored_syntax: str) -> list[Offer]:
    offers = [Offer(OCTET_STREAM, True)]
    if _is_native(stored_syntax):
        offers += [Offer(media, True) for media in dict.fromkeys(frame_codecs.ENCODABLE.values())]
    elif pixels.media_type_of(stored_syntax) != OCTET_STREAM:
        offers.append(Offer(pixels.media_type_of(stored_syntax), True))
    return offers


def _frame_usable(stored_syntax: str) -> Callable[[Offer, str | None], bool]:
    def usable(offer: Offer, syntax: str | None) -> bool:
        native = _is_native(stored_syntax)
        if offer.media_type == OCTET_STREAM:
            return (syntax in (None, ANY_TRANSFER_SYNTAX, ExplicitVRLittleEndian,
                               ImplicitVRLittleEndian, stored_syntax)
                    or (native and syntax in frame_codecs.ENCODABLE))
        if offer.media_type in _SYNTAX_OF_MEDIA and native:
            return (syntax in (None, ANY_TRANSFER_SYNTAX)
                    or frame_codecs.ENCODABLE.get(syntax or "") == offer.media_type)
        return syntax in (None, ANY_TRANSFER_SYNTAX, stored_syntax)

    return usable


@_endpoint
def frames(request: HttpRequest, study: str, series: str, instance: str,
           frames: str) -> HttpResponseBase:
    """``/frames/1,3``: native frames sliced from the file (or transcoded losslessly, and
    cached), or the stored bitstreams.

    One frame (what viewers ask for, one request per image) is answered whole, with its
    Content-Length; a list of frames is streamed one frame at a time.
    """
    numbers = pixels.parse_frame_numbers(frames)
    obj = _resolve(request, AuditAction.RETRIEVE, study, series, instance, session=True)
    assert isinstance(obj, Instance)
    stored_syntax = obj.transfer_syntax_uid
    choice = negotiate(request.headers.get("Accept"), _frame_offers(stored_syntax),
                       usable=_frame_usable(stored_syntax))
    mode = _frame_mode(choice, stored_syntax, any_syntax_for(request))
    fp = blobs.open_blob(obj.blob_key)
    try:
        header, location = pixels.read_header(fp)
        if location is None and "PixelData" not in header and not _has_pixels(fp):
            raise NotFound("this instance has no pixel data")
        count = location.number_of_frames if location else max(obj.number_of_frames, 1)
        pixels.check_frames(numbers, count)
        layout = frame_codecs.Layout.of(header)
        if mode.encode_to is not None:
            try:
                frame_codecs.check_encodable(layout, mode.encode_to)
            except frame_codecs.CannotEncode as exc:
                if mode.asked:
                    raise NotAcceptable(str(exc)) from exc
                mode = _FrameMode(True, f"{pixels.media_type_of(stored_syntax)}; "
                                        f"transfer-syntax={stored_syntax}")
        if mode.stored and location is None:
            # Deflated or otherwise not addressable: decode to native instead.
            mode = _FrameMode(False, _NATIVE_PART)
    except BaseException:
        fp.close()
        raise

    def frame(n: int) -> tuple[str, bytes]:
        if mode.stored and location:
            return mode.part_type, pixels.stored_frame(fp, location, n - 1)
        if mode.encode_to is not None:
            data = frame_codecs.compressed_frame(
                obj.sha256, n, mode.encode_to, layout,
                lambda: pixels.native_frame(fp, header, location, n - 1))
            if data is not None:
                return mode.part_type, data
        return _NATIVE_PART, pixels.native_frame(fp, header, location, n - 1)

    boundary = _boundary()
    if len(numbers) == 1:
        with fp:
            part_type, data = frame(numbers[0])
        return HttpResponse(b"".join(_multipart(boundary, [(part_type, data)])),
                            content_type=_multipart_type(part_type.split(";")[0], boundary))
    part_media = mode.part_type.split(";")[0]
    return StreamingHttpResponse(
        _closing(fp, _multipart(boundary, (frame(n) for n in numbers))),
        content_type=_multipart_type(part_media, boundary),
    )


def _closing(fp: IO[bytes], chunks: Iterator[bytes]) -> Iterator[bytes]:
    """``chunks``, then ``fp`` closed (also when the client goes away mid-stream)."""
    try:
        yield from chunks
    finally:
        fp.close()


def _has_pixels(fp: IO[bytes]) -> bool:
    fp.seek(0)
    ds = dcmread(fp, force=True, defer_size=64)
    return "PixelData" in ds


# --- Rendered and thumbnails ----------------------------------------------------------------

_IMAGE_OFFERS = [Offer(rendering.JPEG, False), Offer(rendering.PNG, False),
                 Offer(rendering.JPEG, True), Offer(rendering.PNG, True)]


def _render_one(blob_key: str, index: int, media_type: str,
                options: rendering.RenderOptions) -> bytes:
    with blobs.open_blob(blob_key) as fp:
        header, location = pixels.read_header(fp)
        count = location.number_of_frames if location else 1
        pixels.check_frames([index + 1], count)
        try:
            arr = pixels.decoded_frame(fp, index)
        except Exception as exc:  # no pixel data, or a codec missing
            raise NotAcceptable(f"this instance cannot be rendered: {exc}") from exc
    return rendering.render(header, arr, media_type, options)


def _options(request: HttpRequest, *, thumbnail: bool = False) -> rendering.RenderOptions:
    try:
        options = rendering.parse_options(request.GET)
    except ValueError as exc:
        raise pixels.FrameError(str(exc)) from exc
    if thumbnail and options.viewport is None:
        options = rendering.RenderOptions(options.window, rendering.THUMBNAIL_SIZE,
                                          options.quality)
    return options


@_endpoint
def rendered(request: HttpRequest, study: str, series: str | None = None,
             instance: str | None = None, frames: str | None = None) -> HttpResponseBase:
    """JPEG or PNG: one image for an instance or one frame, multipart for more."""
    choice = negotiate(request.headers.get("Accept"), _IMAGE_OFFERS)
    options = _options(request)
    numbers = pixels.parse_frame_numbers(frames) if frames is not None else [1]
    obj = _resolve(request, AuditAction.VIEW, study, series, instance, session=True)
    media_type = choice.media_type
    if isinstance(obj, Instance) and len(numbers) == 1:
        image = _render_one(obj.blob_key, numbers[0] - 1, media_type, options)
        return HttpResponse(image, content_type=media_type)
    boundary = _boundary()
    if isinstance(obj, Instance):
        images = ((media_type, _render_one(obj.blob_key, n - 1, media_type, options))
                  for n in numbers)
    else:
        keys = list(_instances(obj).exclude(rows=None).values_list("blob_key", flat=True))
        if not keys:
            raise NotAcceptable("nothing here can be rendered as an image")
        images = ((media_type, _render_one(key, 0, media_type, options)) for key in keys)
    return StreamingHttpResponse(_multipart(boundary, images),
                                 content_type=_multipart_type(media_type, boundary))


@_endpoint
def thumbnail(request: HttpRequest, study: str, series: str | None = None,
              instance: str | None = None) -> HttpResponseBase:
    """A small image standing for the study (its first series), series (its middle
    instance) or instance (its first frame)."""
    offers = _IMAGE_OFFERS[:2]
    choice = negotiate(request.headers.get("Accept"), offers)
    options = _options(request, thumbnail=True)
    # Counted on the caller's viewing session of the study, like rendered frames: a
    # timeline of many series is one entry, not one per thumbnail.
    obj = _resolve(request, AuditAction.VIEW, study, series, instance, session=True)
    key = _representative(obj)
    image = _render_one(key, 0, choice.media_type, options)
    return HttpResponse(image, content_type=choice.media_type)


def _representative(obj: Study | Series | Instance) -> str:
    if isinstance(obj, Instance):
        return obj.blob_key
    images = _instances(obj).exclude(rows=None)
    if isinstance(obj, Study):
        first = images.values_list("series_id", flat=True).first()
        if first is not None:
            images = images.filter(series_id=first)
    keys = list(images.values_list("blob_key", flat=True))
    if not keys:
        raise NotAcceptable("nothing here can be rendered as an image")
    return keys[len(keys) // 2]


# --- Bulk data ------------------------------------------------------------------------------

_BULK_OFFERS = [Offer(OCTET_STREAM, True), Offer(OCTET_STREAM, False)]


def parse_tag_path(tag_path: str) -> list[int | BaseTag]:
    """``"00540016/0/00181072"`` as ``[Tag, 0, Tag]``; NotFound when malformed."""
    steps: list[int | BaseTag] = []
    pieces = [p for p in tag_path.strip("/").split("/") if p]
    for position, piece in enumerate(pieces):
        try:
            if position % 2:
                steps.append(int(piece))
            else:
                if len(piece) != 8:
                    raise ValueError(piece)
                steps.append(Tag(int(piece, 16)))
        except ValueError:
            raise NotFound(f"not a bulk data path: {tag_path}") from None
    if not steps or len(steps) % 2 == 0:
        raise NotFound(f"not a bulk data path: {tag_path}")
    return steps


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """One ``bytes=a-b`` range as (start, end exclusive), or None to send everything."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header or "")
    if not match or not (match[1] or match[2]):
        return None
    if match[1]:
        start = int(match[1])
        end = min(int(match[2]) + 1, size) if match[2] else size
    else:
        start, end = max(size - int(match[2]), 0), size
    if start >= end:
        return None
    return start, end


@_endpoint
def bulkdata(request: HttpRequest, study: str, series: str, instance: str,
             tag_path: str) -> HttpResponseBase:
    """The value a ``BulkDataURI`` names: multipart by default, single part when asked,
    with one byte range (``Range: bytes=a-b``) for a single part."""
    steps = parse_tag_path(tag_path)
    choice = negotiate(request.headers.get("Accept"), _BULK_OFFERS)
    obj = _resolve(request, AuditAction.RETRIEVE, study, series, instance)
    assert isinstance(obj, Instance)
    fp = blobs.open_blob(obj.blob_key)
    try:
        if len(steps) == 1 and steps[0] == pixels.PIXEL_DATA:
            _header, location = pixels.read_header(fp)
            if location is not None and location.encapsulated:
                return _encapsulated_bulk(fp, location, choice)
            if location is not None and location.little_endian:
                assert location.value_length is not None
                return _bulk_response(request, choice, fp, location.value_offset,
                                      location.value_length)
        fp.seek(0)
        found = _element_value(dcmread(fp, force=True, defer_size=pixels.HEADER_DEFER_BYTES),
                               steps)
    except BaseException:
        fp.close()
        raise
    if isinstance(found, tuple):
        offset, length = found
        return _bulk_response(request, choice, fp, offset, length)
    fp.close()
    return _bulk_response(request, choice, None, 0, len(found), found)


def _element_value(ds: Dataset, steps: list[int | BaseTag]) -> bytes | tuple[int, int]:
    """The value at ``steps``: its (offset, length) in the file when the value was left
    there (larger than :data:`~dicomweb.frames.HEADER_DEFER_BYTES`), else its bytes.

    ``ds`` was read with deferred values from a file that is still open.
    """
    current: Any = ds
    for position, step in enumerate(steps):
        last = position == len(steps) - 1
        try:
            if position % 2:
                current = current.value[step]
            elif last:
                raw = current.get_item(step, keep_deferred=True)
                if (isinstance(raw, RawDataElement) and raw.value is None
                        and raw.length not in (0, pixels.UNDEFINED_LENGTH)):
                    return raw.value_tell, raw.length
                current = current[step]
            else:
                current = current[step]
        except (KeyError, IndexError, TypeError):
            raise NotFound("no such bulk data in this instance") from None
    value = getattr(current, "value", None)
    if not isinstance(value, bytes | bytearray):
        raise NotFound("this attribute is not bulk data")
    return bytes(value)


def _read_range(fp: IO[bytes], start: int, length: int) -> Iterator[bytes]:
    try:
        fp.seek(start)
        while length > 0:
            chunk = fp.read(min(blobs.CHUNK_SIZE, length))
            if not chunk:
                break
            length -= len(chunk)
            yield chunk
    finally:
        fp.close()


def _bulk_response(request: HttpRequest, choice: Choice, fp: IO[bytes] | None, offset: int,
                   length: int, value: bytes | None = None) -> HttpResponseBase:
    """One value, streamed from ``fp`` at ``offset`` or given as ``value``."""
    def body(start: int, size: int) -> Iterator[bytes]:
        if fp is not None:
            return _read_range(fp, offset + start, size)
        assert value is not None
        return iter([value[start:start + size]])

    if choice.multipart:
        boundary = _boundary()

        def parts() -> Iterator[bytes]:
            yield _part_header(boundary, OCTET_STREAM, length)
            yield from body(0, length)
            yield f"\r\n--{boundary}--\r\n".encode("ascii")

        return StreamingHttpResponse(parts(),
                                     content_type=_multipart_type(OCTET_STREAM, boundary))
    span = _byte_range(request.headers.get("Range", ""), length)
    if span is None:
        response = StreamingHttpResponse(body(0, length), content_type=OCTET_STREAM)
        response["Content-Length"] = str(length)
    else:
        start, end = span
        response = StreamingHttpResponse(body(start, end - start), content_type=OCTET_STREAM,
                                         status=HTTPStatus.PARTIAL_CONTENT)
        response["Content-Range"] = f"bytes {start}-{end - 1}/{length}"
        response["Content-Length"] = str(end - start)
    response["Accept-Ranges"] = "bytes"
    return response


def _encapsulated_bulk(fp: IO[bytes], location: pixels.PixelLocation,
                       choice: Choice) -> HttpResponseBase:
    """Encapsulated Pixel Data as bulk data: its frames, each in its own part, read from
    the file one at a time."""
    if not choice.multipart:
        fp.close()
        raise NotAcceptable("encapsulated pixel data is given as multipart frames only")
    part_type = (f"{pixels.media_type_of(location.transfer_syntax)}; "
                 f"transfer-syntax={location.transfer_syntax}")
    data = ((part_type, pixels.stored_frame(fp, location, i))
            for i in range(location.number_of_frames))
    boundary = _boundary()
    return StreamingHttpResponse(
        _closing(fp, _multipart(boundary, data)),
        content_type=_multipart_type(part_type.split(";")[0], boundary))
