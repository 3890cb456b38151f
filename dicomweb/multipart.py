"""A streaming ``multipart/related`` parser (RFC 2046 / RFC 2387) for STOW-RS bodies.

The body is read in chunks and each part is spooled to a temporary file (in memory up to
``SPOOL_MEMORY_BYTES``, then on disk), so a multi-gigabyte upload never sits in memory.
Parts are yielded one at a time: the caller stores a part before the next one is read.
Delimiters are found across chunk edges by keeping back the last ``len(delimiter) - 1``
bytes of each chunk until more data arrives.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from email.parser import HeaderParser
from typing import IO

from django.conf import settings

CHUNK_SIZE = 256 * 1024
SPOOL_MEMORY_BYTES = 4 * 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024

Read = Callable[[int], bytes]


class MultipartError(ValueError):
    """The body is not a well-formed multipart/related body; the message says where."""


@dataclass
class ContentType:
    media_type: str
    params: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, header: str) -> ContentType:
        message = Message()
        message["Content-Type"] = header
        params = {k.lower(): v for k, v in message.get_params(failobj=[])[1:]}
        return cls(message.get_content_type().lower(), params)


@dataclass
class Part:
    headers: dict[str, str]
    file: IO[bytes]
    size: int
    oversized: bool = False  # larger than the parser's max_part_bytes: ``file`` is empty

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def _spool() -> IO[bytes]:
    return tempfile.SpooledTemporaryFile(
        max_size=SPOOL_MEMORY_BYTES, dir=getattr(settings, "FILE_UPLOAD_TEMP_DIR", None)
    )


_BOUNDARY_RE = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{1,70}$")


def iter_parts(read: Read, boundary: str, *, chunk_size: int = CHUNK_SIZE,
               max_part_bytes: int | None = None) -> Iterator[Part]:
    """Yield the parts of a multipart body read with ``read(n)`` (returns b"" at the end).

    A part longer than ``max_part_bytes`` is read to its end but not kept: it is yielded
    with ``oversized`` set, its size counted and its file empty, so the next parts can
    still be stored.

    Raises
    ------
    MultipartError
        Bad boundary, a body with no opening delimiter, headers too long, or a body that
        ends inside a part (truncated upload). Parts yielded before stay valid.
    """
    if not _BOUNDARY_RE.match(boundary) or boundary.endswith(" "):
        raise MultipartError("invalid multipart boundary")
    # A CRLF is part of every delimiter but the first; pretend the body starts with one.
    delimiter = b"\r\n--" + boundary.encode("ascii")
    keep = len(delimiter) - 1
    buffer = bytearray(b"\r\n")
    eof = False

    def fill() -> bool:
        nonlocal eof
        if eof:
            return False
        chunk = read(chunk_size)
        if not chunk:
            eof = True
            return False
        buffer.extend(chunk)
        return True

    # Preamble: skip to the first delimiter.
    while True:
        at = buffer.find(delimiter)
        if at >= 0:
            del buffer[: at + len(delimiter)]
            break
        if len(buffer) > keep:
            del buffer[: len(buffer) - keep]
        if not fill():
            raise MultipartError("no multipart delimiter found: empty or not multipart")

    while True:
        # After a delimiter: "--" closes the body, else padding and CRLF start a part.
        while len(buffer) < 2 and fill():
            pass
        if buffer[:2] == b"--":
            return
        while (end := buffer.find(b"\r\n")) < 0:
            if len(buffer) > 1024:
                raise MultipartError("malformed delimiter line")
            if not fill():
                raise MultipartError("body ends after a delimiter")
        if buffer[:end].strip(b" \t"):
            raise MultipartError("malformed delimiter line")
        del buffer[: end + 2]

        # Part headers end at an empty line.
        while True:
            if buffer[:2] == b"\r\n":
                raw_headers = b""
                del buffer[:2]
                break
            end = buffer.find(b"\r\n\r\n")
            if end >= 0:
                raw_headers = bytes(buffer[:end])
                del buffer[: end + 4]
                break
            if len(buffer) > MAX_HEADER_BYTES:
                raise MultipartError("part headers too long")
            if not fill():
                raise MultipartError("body ends inside part headers")
        headers = _headers(raw_headers)

        # Part body, spooled until the next delimiter.
        body = _Body(_spool(), max_part_bytes)
        try:
            while True:
                at = buffer.find(delimiter)
                if at >= 0:
                    body.write(buffer[:at])
                    del buffer[: at + len(delimiter)]
                    break
                if len(buffer) > keep:
                    flush = len(buffer) - keep
                    body.write(buffer[:flush])
                    del buffer[:flush]
                if not fill():
                    raise MultipartError("body ends inside a part (truncated upload?)")
        except BaseException:
            body.spool.close()
            raise
        body.spool.seek(0)
        yield Part(headers, body.spool, body.size, body.oversized)


class _Body:
    """A part's body going to its spool, counted; past ``limit`` it is counted only."""

    def __init__(self, spool: IO[bytes], limit: int | None) -> None:
        self.spool, self.limit = spool, limit
        self.size = 0
        self.oversized = False

    def write(self, data: bytearray) -> None:
        self.size += len(data)
        if self.oversized:
            return
        if self.limit is not None and self.size > self.limit:
            self.oversized = True
            self.spool.seek(0)
            self.spool.truncate()  # what was kept so far is dropped, not stored
            return
        self.spool.write(data)


def _headers(raw: bytes) -> dict[str, str]:
    message = HeaderParser().parsestr(raw.decode("latin-1"))
    return {k.lower(): str(v).strip() for k, v in message.items()}

