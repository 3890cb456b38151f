"""Byte-exact packing of a stored DICOM object: smaller, and ``unpack(pack(b)) == b``.

Transcoding to a lossless transfer syntax keeps the pixels but changes the file; the archive
promises the original bytes. Packing keeps them: the bytes before and after the Pixel Data
value are compressed with zstandard, native (uncompressed) pixel data with lossless JPEG-LS
(CharLS, through pyjpegls) frame by frame, and whatever the codec cannot represent exactly
falls back to zstandard alone. Pure layer: pydicom, NumPy and the codecs; no ORM, no storage.

Format, version 1
-----------------
File header (16 bytes)
    ``MAGIC`` (``b"DCMPACK\\0"``) || format version (1 byte, 1) || 7 zero bytes.
Blocks, back to back, each a 31-byte big-endian header (``BLOCK``) and its payload
    kind (1 byte) || raw length (8) || stored length (8) || CRC-32 of the raw bytes (4) ||
    rows (2) || columns (2) || samples per pixel (1) || interleave (1) || container (1) ||
    precision (1) || offset (2), then ``stored length`` bytes of payload. The raw bytes of
    all blocks, in order, are the original object.

    ``ZSTD`` (1)
        One zstandard frame (with its own checksum) of at most ``CHUNK`` raw bytes; the
        image fields are zero. Used for everything that is not a frame of native pixels.
    ``JPEGLS`` (2)
        One frame of native pixel data as a lossless JPEG-LS codestream. The frame's
        samples, read as unsigned integers of the ``container`` type (``CONTAINERS``: 8 or
        16 bits, signedness and byte order from the header; signed samples XOR the sign
        bit, so they sort as unsigned), minus ``offset`` (the frame's smallest), are coded
        with ``precision`` bits (2 to 16); ``interleave`` is JPEG-LS's mode (2 for
        Planar Configuration 0, colour by pixel; 0 for 1, colour by plane).
    ``END`` (0)
        Raw length is the whole object's size, stored length 32, the payload its SHA-256.
        Nothing may follow.

A frame goes to JPEG-LS only when the header describes it exactly: Bits Allocated 8 or 16,
High Bit = Bits Stored - 1, 1 or 3 samples (not a YBR_*_422/420 layout), the value's length
at least Rows x Columns x samples x frames, and every sample inside Bits Stored (padding
bits holding data, such as overlays, keep the frame in zstandard). Encapsulated pixel data,
32-bit and 1-bit samples, Float Pixel Data, deflated files and objects pydicom cannot read
are zstandard alone. A JPEG-LS stream not smaller than its frame is not kept either.

Checks
    Unpacking checks each block's length and CRC-32 before its bytes are handed out, and
    the whole object's size and SHA-256 before the last block's: a damaged packed object
    raises :class:`CorruptPacked` and a complete read never yields wrong bytes.
    :func:`pack_verified` unpacks what it wrote and compares its SHA-256 with the
    original's (and the one on record) before it is used; on a mismatch it logs and
    returns None, and the caller keeps the original.

Memory
    Both directions stream: one block at a time, so at most about four times the larger of
    ``CHUNK`` (4 MiB) and the largest frame (the frame, its unsigned copy, the codestream,
    the decoded samples), whatever the number of frames or the object's size.
"""

from __future__ import annotations

import hashlib
import io
import logging
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, BinaryIO, Protocol

import jpeg_ls
import numpy as np
import zstandard
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

log = logging.getLogger(__name__)

MAGIC = b"DCMPACK\0"
FORMAT_VERSION = 1
HEADER = MAGIC + bytes([FORMAT_VERSION]) + bytes(7)
BLOCK = struct.Struct(">BQQIHHBBBBH")

END, ZSTD, JPEGLS = 0, 1, 2
CHUNK = 4 << 20  # raw bytes per zstandard block
ZSTD_LEVEL = 6  # above 6 costs much speed for little on DICOM headers and fallback pixels
MAX_FRAME = 1 << 30  # a larger raw block in a packed object is damage, not an image

# container code -> (numpy dtype of the samples as stored, signed)
CONTAINERS: dict[int, tuple[str, bool]] = {
    1: ("u1", False), 2: ("i1", True),
    3: ("<u2", False), 4: ("<i2", True),
    5: (">u2", False), 6: (">i2", True),
}
SUBSAMPLED = ("YBR_FULL_422", "YBR_PARTIAL_422", "YBR_PARTIAL_420")
PIXEL_DATA = 0x7FE00010
UNDEFINED_LENGTH = 0xFFFFFFFF
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
            b"UT", b"UV"}


class CorruptPacked(ValueError):
    """The packed object is not what was packed: damaged, truncated, or not one at all."""


class Codec(Protocol):
    """A lossless image codec for one frame of unsigned samples (little-endian)."""

    def encode(self, samples: bytes, rows: int, columns: int, samples_per_pixel: int,
               precision: int, interleave: int) -> bytes: ...

    def decode(self, stream: bytes) -> bytes: ...


class JpegLs:
    """Lossless JPEG-LS through CharLS (pyjpegls)."""

    def encode(self, samples: bytes, rows: int, columns: int, samples_per_pixel: int,
               precision: int, interleave: int) -> bytes:
        return bytes(jpeg_ls.encode_buffer(samples, rows, columns, samples_per_pixel,
                                           precision, interleave_mode=interleave))

    def decode(self, stream: bytes) -> bytes:
        decoded, _info = jpeg_ls.decode_buffer(stream)
        return bytes(decoded)


JPEG_LS = JpegLs()


@dataclass
class Packed:
    """What :func:`pack` wrote."""

    sha256: str = ""  # of the original
    size: int = 0  # of the original
    packed_size: int = 0
    packed_sha256: str = ""  # of the packed form, once :func:`pack_verified` read it back
    jpegls_frames: int = 0
    zstd_frames: int = 0  # frames of native pixels that fell back to zstandard
    notes: list[str] = field(default_factory=list)  # why pixel data fell back, if it did

    @property
    def ratio(self) -> float:
        return self.size / self.packed_size if self.packed_size else 0.0


@dataclass(frozen=True)
class _Layout:
    """Where the Pixel Data value is and, if native and representable, its frames."""

    value_start: int
    value_length: int
    frames: int = 0  # 0: not coded as frames (zstandard alone)
    rows: int = 0
    columns: int = 0
    samples: int = 1
    interleave: int = 0
    container: int = 0
    bits_stored: int = 0

    @property
    def frame_bytes(self) -> int:
        itemsize = 2 if self.container >= 3 else 1
        return self.rows * self.columns * self.samples * itemsize


# --- packing ------------------------------------------------------------------------------


class _Writer:
    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.written = 0
        self.zstd = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True)
        # The quick try of a frame against its JPEG-LS stream (about 1 ms for 0.5 MB).
        self.zstd_fast = zstandard.ZstdCompressor(level=1, write_checksum=True)

    def write(self, data: bytes) -> None:
        self.out.write(data)
        self.written += len(data)

    def block(self, kind: int, raw: bytes | memoryview, payload: bytes, rows: int = 0,
              columns: int = 0, samples: int = 0, interleave: int = 0, container: int = 0,
              precision: int = 0, offset: int = 0) -> None:
        self.write(BLOCK.pack(kind, len(raw), len(payload), zlib.crc32(raw), rows, columns,
                              samples, interleave, container, precision, offset))
        self.write(payload)

    def zstd_block(self, raw: bytes) -> None:
        self.block(ZSTD, raw, self.zstd.compress(raw))


class _Source:
    """The original, read forward once, hashed as it goes."""

    def __init__(self, fp: IO[bytes]) -> None:
        self.fp = fp
        self.hash = hashlib.sha256()
        self.pos = 0

    def read(self, count: int) -> bytes:
        data = _read_exact(self.fp, count)
        self.hash.update(data)
        self.pos += len(data)
        return data

    def chunks(self, end: int | None) -> Iterator[bytes]:
        """CHUNK-sized pieces up to offset ``end`` (None: to the end of the source)."""
        while end is None or self.pos < end:
            want = CHUNK if end is None else min(CHUNK, end - self.pos)
            data = self.read(want)
            if not data:
                return
            yield data
            if len(data) < want:
                return


def pack(source: IO[bytes], out: IO[bytes], codec: Codec = JPEG_LS, *,
         try_general: bool = True) -> Packed:
    """Write the packed form of the DICOM object read from ``source`` (seekable, at its
    start) to ``out``. Anything it does not understand is packed with zstandard alone:
    this never refuses an object. Check the result with :func:`pack_verified`.
    ``try_general``: a frame's JPEG-LS stream is compared with its zstandard form and the
    smaller kept (off: JPEG-LS whenever it is exact and smaller than the frame)."""
    start = source.tell()
    layout, notes = _layout(source)
    source.seek(start)
    writer = _Writer(out)
    writer.write(HEADER)
    src = _Source(source)
    result = Packed(notes=notes)
    if layout is not None:
        for raw in src.chunks(layout.value_start):
            writer.zstd_block(raw)
        if layout.frames:
            for _ in range(layout.frames):
                raw = src.read(layout.frame_bytes)
                if len(raw) < layout.frame_bytes:  # the file ends inside the pixel data
                    _note(notes, "pixel data cut short by the end of the file")
                    if raw:
                        writer.zstd_block(raw)
                    break
                if _frame_block(writer, raw, layout, codec, notes, try_general):
                    result.jpegls_frames += 1
                else:
                    result.zstd_frames += 1
        for raw in src.chunks(layout.value_start + layout.value_length):
            writer.zstd_block(raw)
    for raw in src.chunks(None):
        writer.zstd_block(raw)
    result.sha256 = src.hash.hexdigest()
    result.size = src.pos
    writer.write(BLOCK.pack(END, src.pos, 32, 0, 0, 0, 0, 0, 0, 0, 0))
    writer.write(src.hash.digest())
    result.packed_size = writer.written
    return result


def _frame_block(writer: _Writer, raw: bytes, layout: _Layout, codec: Codec,
                 notes: list[str], try_general: bool = True) -> bool:
    """Write one frame, as JPEG-LS if it is exact and smaller than both the frame and its
    zstandard form: True, else zstandard."""
    dtype, signed = CONTAINERS[layout.container]
    samples = np.frombuffer(raw, dtype=dtype)
    lowest, highest = int(samples.min()), int(samples.max())
    bits = layout.bits_stored
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if lowest < low or highest > high:
        _note(notes, "samples outside Bits Stored (padding bits hold data)")
        writer.zstd_block(raw)
        return False
    unsigned = _unsigned(samples, layout.container)
    offset = int(unsigned.min())
    precision = max(2, (int(unsigned.max()) - offset).bit_length())
    unsigned -= np.asarray(offset, dtype=unsigned.dtype)
    coded = unsigned.astype(np.uint8 if precision <= 8 else np.uint16, copy=False)
    del unsigned
    try:
        stream = codec.encode(coded.tobytes(), layout.rows, layout.columns, layout.samples,
                              precision, layout.interleave)
    except (ValueError, RuntimeError) as exc:
        _note(notes, f"the codec refused a frame: {exc}")
        writer.zstd_block(raw)
        return False
    if len(stream) >= len(raw):
        writer.zstd_block(raw)
        return False
    # Some images (a grey ultrasound in three identical channels, large flat borders) pack
    # better with zstandard alone: both are tried and the smaller kept.
    general = writer.zstd_fast.compress(raw) if try_general else None
    if general is not None and len(general) < len(stream):
        writer.zstd_block(raw)  # at the usual level: smaller still, only for these frames
        return False
    writer.block(JPEGLS, raw, stream, layout.rows, layout.columns, layout.samples,
                 layout.interleave, layout.container, precision, offset)
    return True


def _unsigned(samples: np.ndarray, container: int) -> np.ndarray:
    """A little-endian unsigned copy; signed samples with the sign bit flipped (offset
    binary), so that order and differences are kept."""
    dtype, signed = CONTAINERS[container]
    width = 8 if dtype.endswith("1") else 16
    unsigned = samples.view(np.dtype(dtype.replace("i", "u"))).astype(
        np.uint8 if width == 8 else np.dtype("<u2"))
    if signed:
        np.bitwise_xor(unsigned, 1 << (width - 1), out=unsigned)
    return unsigned


def _from_unsigned(coded: np.ndarray, container: int, offset: int) -> bytes:
    dtype, signed = CONTAINERS[container]
    width = 8 if dtype.endswith("1") else 16
    unsigned = coded.astype(np.uint8 if width == 8 else np.dtype("<u2"))
    np.add(unsigned, offset, out=unsigned, casting="unsafe")
    if signed:
        np.bitwise_xor(unsigned, 1 << (width - 1), out=unsigned)
    return unsigned.astype(np.dtype(dtype.replace("i", "u")), copy=False).tobytes()


def _note(notes: list[str], note: str) -> None:
    if note not in notes:
        notes.append(note)


def _layout(source: IO[bytes]) -> tuple[_Layout | None, list[str]]:
    """Where the top-level Pixel Data value is and how its frames are laid out; None when
    the object is not one pydicom can walk to it (then everything is zstandard)."""
    notes: list[str] = []
    start = source.tell()
    try:
        ds = dcmread(source, defer_size=4096, stop_before_pixels=True, force=True)
        tag_at = source.tell() - start
        header = source.read(12)
    except Exception as exc:  # anything pydicom cannot read is still packed, as bytes
        return None, [f"not read as DICOM ({type(exc).__name__})"]
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax == DeflatedExplicitVRLittleEndian:
        return None, ["deflated transfer syntax"]
    implicit, little = ds.original_encoding
    if implicit is None or little is None or len(header) < 8:
        return None, ["no pixel data"]
    order = "<" if little else ">"
    (group, element) = struct.unpack(order + "HH", header[:4])
    if (group << 16 | element) != PIXEL_DATA:
        return None, ["no native Pixel Data"]
    if implicit:
        value_start, length = tag_at + 8, struct.unpack(order + "I", header[4:8])[0]
    elif header[4:6] in LONG_VRS:
        if len(header) < 12:
            return None, ["truncated Pixel Data"]
        value_start, length = tag_at + 12, struct.unpack(order + "I", header[8:12])[0]
    else:
        value_start, length = tag_at + 8, struct.unpack(order + "H", header[6:8])[0]
    if length == UNDEFINED_LENGTH:
        return None, ["encapsulated pixel data"]
    whole = _Layout(value_start, length)
    try:
        frames = _frames(ds, little, length, notes)
    except (TypeError, ValueError, AttributeError) as exc:
        return whole, [f"unreadable image header ({exc})"]
    if frames is None:
        return whole, notes
    return _Layout(value_start, length, *frames), notes


def _frames(ds: Dataset, little: bool, length: int, notes: list[str]
            ) -> tuple[int, int, int, int, int, int, int] | None:
    """(frames, rows, columns, samples, interleave, container, bits stored) when the
    header describes pixel data JPEG-LS can code exactly, else None with a note why."""
    allocated = int(ds.get("BitsAllocated", 0) or 0)
    stored = int(ds.get("BitsStored", 0) or 0)
    high = int(ds.get("HighBit", -1) if ds.get("HighBit") is not None else -1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    planar = int(ds.get("PlanarConfiguration", 0) or 0)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "") or "")
    if allocated not in (8, 16):
        notes.append(f"{allocated}-bit samples")
        return None
    if not 2 <= stored <= allocated or high != stored - 1:
        notes.append(f"unusual layout (Bits Stored {stored}, High Bit {high})")
        return None
    if samples not in (1, 3) or planar not in (0, 1) or photometric in SUBSAMPLED:
        notes.append(f"unusual layout ({samples} samples, {photometric})")
        return None
    if not (1 <= rows <= 65535 and 1 <= columns <= 65535 and frames >= 1):
        notes.append("no image size")
        return None
    frame = rows * columns * samples * allocated // 8
    if frame > MAX_FRAME or frames * frame > length:
        notes.append("pixel data shorter than the header says")
        return None
    if allocated == 8:
        container = 2 if signed else 1
    else:
        container = (4 if signed else 3) if little else (6 if signed else 5)
    interleave = 0 if samples == 1 or planar == 1 else 2
    return frames, rows, columns, samples, interleave, container, stored


# --- unpacking ----------------------------------------------------------------------------


class Unpacker(io.RawIOBase):
    """The original bytes of a packed object, read forward from ``source`` (any stream:
    a file, a decrypting reader), one block at a time.

    ``error`` is the exception raised for a damaged object (:class:`CorruptPacked` unless
    the caller's layer has its own); once raised, every later read raises it again.
    """

    def __init__(self, source: IO[bytes] | BinaryIO, codec: Codec = JPEG_LS,
                 error: type[Exception] = CorruptPacked) -> None:
        super().__init__()
        self._source = source
        self._codec = codec
        self._error = error
        self._failure: Exception | None = None
        self._out = memoryview(b"")
        self._hash = hashlib.sha256()
        self._size = 0
        self._next: tuple[int, ...] | None = None
        self._done = False
        self._started = False  # the file header is read on the first read, not here

    def _start(self) -> None:
        self._started = True
        head = _read_exact(self._source, len(HEADER))
        if head[:len(MAGIC)] != MAGIC:
            self._fail("it does not start with the packing magic")
        if head != HEADER:
            self._fail(f"unknown packing format version {head[len(MAGIC)]}")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if self._failure is not None:
            raise self._failure
        with memoryview(buffer) as raw, raw.cast("B") as view:
            written = 0
            while written < len(view):
                if not self._out:
                    if self._done:
                        break
                    self._out = memoryview(self._next_block())
                    continue
                count = min(len(view) - written, len(self._out))
                view[written:written + count] = self._out[:count]
                self._out = self._out[count:]
                written += count
            return written

    @property
    def plaintext_sha256(self) -> str:
        """Hex SHA-256 of the original, once it has been read to its end (and checked)."""
        if not self._done:
            raise RuntimeError("the SHA-256 is known only after the end of the stream")
        return self._hash.hexdigest()

    @property
    def plaintext_size(self) -> int:
        return self._size

    def _fail(self, reason: str) -> None:
        self._failure = self._error(f"packed object is damaged: {reason}")
        raise self._failure

    def _header(self) -> tuple[int, ...]:
        head = _read_exact(self._source, BLOCK.size)
        if len(head) != BLOCK.size:
            self._fail("it ends inside a block header (truncated)")
        return BLOCK.unpack(head)

    def _next_block(self) -> bytes:
        if not self._started:
            self._start()
        fields = self._next or self._header()
        self._next = None
        kind, raw_length, stored, crc = fields[:4]
        if kind == END:
            self._finish(fields)
            return b""
        if raw_length > MAX_FRAME or stored > raw_length + raw_length // 128 + 1024:
            self._fail(f"a block claims {raw_length} bytes from {stored}")
        payload = _read_exact(self._source, stored)
        if len(payload) != stored:
            self._fail("it ends inside a block (truncated)")
        try:
            raw = self._decode(fields, payload)
        except (zstandard.ZstdError, ValueError, RuntimeError) as exc:
            if self._failure is not None:
                raise
            self._fail(f"a block does not decode: {exc}")
        if len(raw) != raw_length or zlib.crc32(raw) != crc:
            self._fail("a block decodes to other bytes than were packed")
        self._hash.update(raw)
        self._size += len(raw)
        # The last bytes go out only once the whole object has been checked.
        self._next = self._header()
        if self._next[0] == END:
            self._finish(self._next)
        return raw

    def _decode(self, fields: tuple[int, ...], payload: bytes) -> bytes:
        kind, raw_length = fields[0], fields[1]
        if kind == ZSTD:
            return bytes(zstandard.ZstdDecompressor().decompress(
                payload, max_output_size=raw_length))
        if kind != JPEGLS:
            self._fail(f"unknown block kind {kind}")
        _, _, _, _, rows, columns, samples, _interleave, container, precision, offset = fields
        if container not in CONTAINERS or not 2 <= precision <= 16:
            self._fail("a frame's header is not one packing writes")
        decoded = self._codec.decode(payload)
        coded = np.frombuffer(decoded, dtype=np.uint8 if precision <= 8 else np.dtype("<u2"))
        if coded.size != rows * columns * samples:
            self._fail(f"a frame decodes to {coded.size} samples, not "
                       f"{rows} x {columns} x {samples}")
        return _from_unsigned(coded, container, offset)

    def _finish(self, fields: tuple[int, ...]) -> None:
        digest = _read_exact(self._source, 32)
        if _read_exact(self._source, 1):
            self._fail("bytes follow its end")
        if len(digest) != 32 or fields[1] != self._size or digest != self._hash.digest():
            self._fail(f"it unpacks to {self._size} bytes with SHA-256 "
                       f"{self._hash.hexdigest()}, not what was packed")
        self._done = True


def unpack(source: IO[bytes] | BinaryIO, out: IO[bytes], codec: Codec = JPEG_LS) -> str:
    """Write the original bytes of the packed object in ``source`` to ``out``; its SHA-256.
    Raises :class:`CorruptPacked` for a damaged object."""
    reader = Unpacker(source, codec)
    # One buffer, filled again and again: read(CHUNK) would make two new 4 MiB copies a turn.
    buffer = bytearray(CHUNK)
    with memoryview(buffer) as view:
        while count := reader.readinto(view):
            out.write(view[:count])
    return reader.plaintext_sha256


def is_packed(head: bytes) -> bool:
    """Whether ``head`` (the first bytes of something) starts like a packed object."""
    return head.startswith(MAGIC)


class _Hashing:
    def __init__(self) -> None:
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return len(data)


def pack_verified(source: IO[bytes], out: IO[bytes], *, expected_sha256: str | None = None,
                  codec: Codec = JPEG_LS) -> Packed | None:
    """Pack ``source`` into ``out`` (readable and seekable, e.g. a temporary file), unpack
    what was written and compare its SHA-256 with the original's, and with
    ``expected_sha256`` (the one on record) when given: the result, ``out`` rewound to its
    start, or None (logged) when the packed form is not to be used; the caller keeps the
    original then."""
    start = out.tell()
    packed = pack(source, out, codec)
    if expected_sha256 is not None and packed.sha256 != expected_sha256:
        log.error("packing refused: the object read has SHA-256 %s, not %s on record",
                  packed.sha256, expected_sha256)
        return None
    out.flush()
    out.seek(start)
    try:
        sink = _Hashing()
        read = _HashingReader(out)
        unpacked = unpack(read, sink, codec)  # type: ignore[arg-type]
    except CorruptPacked as exc:
        log.error("packing did not round-trip (%s): the original is kept", exc)
        return None
    if unpacked != packed.sha256:
        log.error("packing did not round-trip (SHA-256 %s, not %s): the original is kept",
                  unpacked, packed.sha256)
        return None
    out.seek(start)
    packed.packed_sha256 = read.hash.hexdigest()
    return packed


class _HashingReader:
    """The packed form as :func:`unpack` reads it, hashed on the way: what was proven to
    unpack to the original, so a copy of it can be checked by this hash alone."""

    def __init__(self, source: IO[bytes]) -> None:
        self._source = source
        self.hash = hashlib.sha256()

    def read(self, size: int = -1, /) -> bytes:
        data = self._source.read(size)
        self.hash.update(data)
        return data


def _read_exact(fp: IO[bytes] | BinaryIO, count: int) -> bytes:
    """``count`` bytes, fewer only at the end of the stream (streams may read short)."""
    data = fp.read(count)
    if len(data) == count or not data:
        return data
    parts = [data]
    got = len(data)
    while got < count:
        more = fp.read(count - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)
