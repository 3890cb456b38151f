"""Byte ranges of a WADO-RS retrieve sent as stored, so a cut download resumes anywhere.

A study, series or instance sent exactly as stored (``transfer-syntax=*``, or stored in
Explicit VR Little Endian) is a fixed sequence of bytes once its multipart boundary is
fixed: the boundary is an HMAC of the instances' blob keys under ``SECRET_KEY``, so every
web node of a cluster builds the same body (and none can be guessed by whoever wrote the
objects), and that body can be answered by ranges (RFC 9110 14). A client whose download
was cut by a dead node asks the rest from another node (``Range: bytes=N-``, with
``If-Range`` its ETag) and gets what it lacked. When the instances under the URL change,
so do the boundary and the ETag: ``If-Range`` then gets the whole new body, as it should.
Transcoded answers are made on the fly and have no ranges.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Literal

from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase

from imaging import blobs

_RANGE = re.compile(r"\s*bytes=(\d*)-(\d*)\s*")


def boundary(blob_keys: Iterable[str]) -> str:
    """The same on every node for the same objects; unpredictable without SECRET_KEY."""
    message = "\n".join(blob_keys).encode()
    return hmac.new(settings.SECRET_KEY.encode(), b"wado-rs boundary\n" + message,
                    hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True)
class Segment:
    """Literal bytes (part headers), or ``size`` bytes of the blob ``blob_key``."""

    data: bytes = b""
    blob_key: str = ""
    size: int = 0

    @property
    def length(self) -> int:
        return self.size if self.blob_key else len(self.data)


def _slice(segment: Segment, lo: int, hi: int) -> Iterator[bytes]:
    if not segment.blob_key:
        yield segment.data[lo:hi]
        return
    with blobs.open_blob(segment.blob_key) as fp:
        if fp.seekable():
            fp.seek(lo)
        else:
            skip = lo
            while skip and (chunk := fp.read(min(skip, blobs.CHUNK_SIZE))):
                skip -= len(chunk)
        left = hi - lo
        while left > 0 and (chunk := fp.read(min(left, blobs.CHUNK_SIZE))):
            left -= len(chunk)
            yield chunk


def iter_range(segments: list[Segment], start: int, end: int) -> Iterator[bytes]:
    """The body's bytes from ``start`` to ``end`` (exclusive), reading only the blobs
    that overlap it."""
    offset = 0
    for segment in segments:
        seg_end = offset + segment.length
        if seg_end > start and offset < end:
            yield from _slice(segment, max(start, offset) - offset, min(end, seg_end) - offset)
        offset = seg_end


def parse_range(header: str, size: int) -> tuple[int, int] | Literal[False] | None:
    """One ``bytes=a-b`` as (start, end exclusive); None: send the whole (no range, or
    several, which RFC 9110 lets a server ignore); False: unsatisfiable (416)."""
    match = _RANGE.fullmatch(header or "")
    if not match or not (match[1] or match[2]):
        return None
    if match[1]:
        start = int(match[1])
        end = min(int(match[2]) + 1, size) if match[2] else size
        if match[2] and int(match[2]) < start:
            return None
    else:
        start, end = max(size - int(match[2]), 0), size
    if start >= size or start >= end:
        return False
    return start, end


def response(request: HttpRequest, segments: list[Segment], content_type: str,
             etag: str) -> HttpResponseBase:
    """200 with the whole body, 206 with the asked range, or 416."""
    size = sum(s.length for s in segments)
    if_range = request.headers.get("If-Range")
    span = None if if_range and if_range != etag else parse_range(
        request.headers.get("Range", ""), size)
    if span is False:
        refused = HttpResponse(status=HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
        refused["Content-Range"] = f"bytes */{size}"
        return refused
    start, end = span if span else (0, size)
    answer = StreamingHttpResponse(iter_range(segments, start, end), content_type=content_type,
                                   status=HTTPStatus.PARTIAL_CONTENT if span else HTTPStatus.OK)
    answer["Content-Length"] = str(end - start)
    if span:
        answer["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    answer["Accept-Ranges"] = "bytes"
    answer["ETag"] = etag
    return answer
