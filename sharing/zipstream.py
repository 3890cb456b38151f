"""A ZIP archive laid out in advance, so any byte range of it can be produced on demand.

Why not a library: ``stream-zip`` and ``zipstream`` write well-formed streaming ZIPs, but
only front to back; they cannot say where byte *n* is, so they cannot answer a Range
request (a resumed download) without producing everything before it. Here every member is
STORED (DICOM pixel data is mostly compressed already or compresses poorly, and stored
members make sizes predictable) and its CRC-32 is known before the archive starts (see
``sharing.models.MemberChecksum``). Then each local header, each member's offset, the
central directory and the total length are fixed numbers: :meth:`Archive.iter_range` yields
any slice of the archive by reading only the members that overlap it, in chunks, from the
offset asked for. No temporary copy and no member is ever held whole in memory (only the
headers, about 100 bytes per member, and small generated members such as DICOMDIR).

No data descriptors are used (sizes and CRCs sit in the local headers), so streaming
unzippers that read local headers front to back work too. ZIP64 records are written only
where a size, an offset or the number of members needs them (PKWARE APPNOTE 6.3.10, 4.5.3).
Pure code: no database, no storage.
"""

from __future__ import annotations

import datetime
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

# A member's bytes from an offset to its end, in chunks.
Reader = Callable[[int], Iterable[bytes]]

_MAX32 = 0xFFFFFFFF
_MAX16 = 0xFFFF
_UTF8_FLAG = 1 << 11
_VERSION_MADE_BY = (3 << 8) | 45  # UNIX, APPNOTE 4.5
_FILE_MODE = 0o100644 << 16


@dataclass(frozen=True)
class Member:
    """One archive member: its name, size and CRC-32, and where its bytes come from."""

    name: str
    size: int
    crc32: int
    source: bytes | Reader

    @classmethod
    def from_bytes(cls, name: str, data: bytes) -> Member:
        return cls(name, len(data), zlib.crc32(data), data)


class SourceMismatch(RuntimeError):
    """A member's source gave a different number of bytes than its declared size."""


def _dos_datetime(when: datetime.datetime) -> tuple[int, int]:
    year = min(max(when.year, 1980), 2107)
    date = ((year - 1980) << 9) | (when.month << 5) | when.day
    time = (when.hour << 11) | (when.minute << 5) | (when.second // 2)
    return time, date


def _encode_name(name: str) -> tuple[bytes, int]:
    try:
        return name.encode("ascii"), 0
    except UnicodeEncodeError:
        return name.encode("utf-8"), _UTF8_FLAG


def _local_header(name: bytes, flags: int, member: Member, dostime: tuple[int, int]) -> bytes:
    zip64 = member.size >= _MAX32
    extra = struct.pack("<HHQQ", 0x0001, 16, member.size, member.size) if zip64 else b""
    size32 = _MAX32 if zip64 else member.size
    return struct.pack(
        "<IHHHHHIIIHH", 0x04034B50, 45 if zip64 else 20, flags, 0, dostime[0], dostime[1],
        member.crc32, size32, size32, len(name), len(extra),
    ) + name + extra


def _central_header(name: bytes, flags: int, member: Member, dostime: tuple[int, int],
                    offset: int) -> bytes:
    values: list[int] = []
    if member.size >= _MAX32:
        values += [member.size, member.size]
    if offset >= _MAX32:
        values.append(offset)
    extra = (struct.pack("<HH", 0x0001, 8 * len(values)) + struct.pack(f"<{len(values)}Q",
                                                                         *values)
             if values else b"")
    size32 = _MAX32 if member.size >= _MAX32 else member.size
    return struct.pack(
        "<IHHHHHHIIIHHHHHII", 0x02014B50, _VERSION_MADE_BY, 45 if values else 20, flags, 0,
        dostime[0], dostime[1], member.crc32, size32, size32, len(name), len(extra), 0, 0, 0,
        _FILE_MODE, min(offset, _MAX32),
    ) + name + extra


def _end_records(count: int, cd_offset: int, cd_size: int) -> bytes:
    out = b""
    if count >= _MAX16 or cd_offset >= _MAX32 or cd_size >= _MAX32:
        zip64_eocd_offset = cd_offset + cd_size
        out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, _VERSION_MADE_BY, 45, 0, 0, count,
                           count, cd_size, cd_offset)
        out += struct.pack("<IIQI", 0x07064B50, 0, zip64_eocd_offset, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, min(count, _MAX16), min(count, _MAX16),
                       min(cd_size, _MAX32), min(cd_offset, _MAX32), 0)
    return out


@dataclass(frozen=True)
class _Segment:
    start: int
    size: int
    data: bytes | None = None
    member: Member | None = None


class Archive:
    """The archive of ``members`` (in order), all dated ``modified``."""

    def __init__(self, members: Iterable[Member], modified: datetime.datetime) -> None:
        dostime = _dos_datetime(modified)
        segments: list[_Segment] = []
        central: list[bytes] = []
        self.offsets: dict[str, int] = {}
        position = 0
        count = 0
        for member in members:
            name, flags = _encode_name(member.name)
            if member.name in self.offsets:
                raise ValueError(f"duplicate member name {member.name!r}")
            self.offsets[member.name] = position
            header = _local_header(name, flags, member, dostime)
            central.append(_central_header(name, flags, member, dostime, position))
            segments.append(_Segment(position, len(header), data=header))
            position += len(header)
            if isinstance(member.source, bytes) and len(member.source) != member.size:
                raise SourceMismatch(f"{member.name}: {len(member.source)} != {member.size}")
            segments.append(_Segment(position, member.size, member=member))
            position += member.size
            count += 1
        directory = b"".join(central)
        tail = directory + _end_records(count, position, len(directory))
        segments.append(_Segment(position, len(tail), data=tail))
        self._segments = segments
        self.size = position + len(tail)
        self.count = count

    def iter_range(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The archive's bytes from ``start`` up to ``end`` (exclusive), in chunks."""
        end = self.size if end is None else min(end, self.size)
        for segment in self._segments:
            seg_end = segment.start + segment.size
            if seg_end <= start or segment.start >= end:
                continue
            lo = max(start, segment.start) - segment.start
            hi = min(end, seg_end) - segment.start
            if segment.data is not None:
                yield segment.data[lo:hi]
            elif segment.member is not None:
                yield from _member_slice(segment.member, lo, hi)

    def __iter__(self) -> Iterator[bytes]:
        return self.iter_range()


def _member_slice(member: Member, lo: int, hi: int) -> Iterator[bytes]:
    if isinstance(member.source, bytes):
        yield member.source[lo:hi]
        return
    wanted = hi - lo
    sent = 0
    for chunk in member.source(lo):
        if not chunk:
            continue
        if sent + len(chunk) > wanted:
            chunk = chunk[: wanted - sent]
        sent += len(chunk)
        yield chunk
        if sent == wanted:
            return
    if sent != wanted:
        raise SourceMismatch(f"{member.name}: ended {wanted - sent} bytes early")


def crc32_of(chunks: Iterable[bytes]) -> tuple[int, int]:
    """CRC-32 and length of a stream of chunks."""
    crc = 0
    size = 0
    for chunk in chunks:
        crc = zlib.crc32(chunk, crc)
        size += len(chunk)
    return crc, size
