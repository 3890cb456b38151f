"""Pixel data and whole objects in the representations WADO-RS gives (pydicom only, no ORM).

Frames are read from the stored file without loading its pixel data: the header is parsed
up to (not into) the Pixel Data element, then only the bytes of the wanted frame are read,
by offset for native pixel data, through the Basic (or Extended) Offset Table or a fragment
scan for encapsulated pixel data. Decoding happens only when a client cannot take the
stored encoding.

The same module transcodes whole objects for ``transfer-syntax=`` requests and writes the
Part 10 header that bare datasets (stored as a C-STORE body arrived) need to be served as
``application/dicom``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from io import BytesIO
from typing import IO, TYPE_CHECKING, BinaryIO, cast

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, get_frame
from pydicom.filewriter import write_file_meta_info
from pydicom.pixels.utils import pixel_array
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

if TYPE_CHECKING:
    import numpy as np

PIXEL_DATA = 0x7FE00010
EXTENDED_OFFSET_TABLE = 0x7FE00001
EXTENDED_OFFSET_TABLE_LENGTHS = 0x7FE00002
UNDEFINED_LENGTH = 0xFFFFFFFF
_LONG_LENGTH_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR",
                    b"UT", b"SV", b"UV"}

# The media type of a stored bitstream, per transfer syntax (PS3.18 Table 8.7.3-5).
BITSTREAM_MEDIA_TYPES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
OCTET_STREAM = "application/octet-stream"
# Values larger than this stay in the file when a header is read (overlays, private blobs):
# the largest a renderer needs, a 16-bit palette LUT, is 128 KiB.
HEADER_DEFER_BYTES = 1024 * 1024

# What ``transfer-syntax=`` may ask for on whole objects. Lossy targets are refused on
# purpose: the archive does not degrade diagnostic images on a client's request.
NATIVE_TARGETS = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                            DeflatedExplicitVRLittleEndian})
# HTJ2K lossless objects are made frame by frame with the frames' encoder
# (dicomweb.frame_codecs: OpenJPH), which pydicom's compress() does not have.
HTJ2K_TARGETS = frozenset({HTJ2KLossless, HTJ2KLosslessRPCL})
COMPRESSED_TARGETS = frozenset({RLELossless, JPEGLSLossless, JPEG2000Lossless}) | HTJ2K_TARGETS
TRANSCODE_TARGETS = NATIVE_TARGETS | COMPRESSED_TARGETS


class FrameError(ValueError):
    """A frame list that cannot be served (malformed, or beyond the object's frames)."""


class CannotTranscode(ValueError):
    """The object cannot be given in the asked transfer syntax."""


def parse_frame_numbers(text: str) -> list[int]:
    """``"1,3,5"`` as ``[1, 3, 5]`` (1-based, as in the URL); :class:`FrameError` if bad.

    Each frame may be named once: PS3.18 lists frames, it does not repeat them, and a list
    that repeats one frame hundreds of times would only multiply the work of answering.
    """
    numbers: list[int] = []
    seen: set[int] = set()
    for piece in text.replace("%2C", ",").replace("%2c", ",").split(","):
        piece = piece.strip()
        if not (piece.isascii() and piece.isdigit()) or int(piece) < 1:
            raise FrameError(f"frame numbers are positive integers, got {piece[:20]!r}")
        number = int(piece)
        if number in seen:
            raise FrameError(f"frame {number} is asked for more than once")
        seen.add(number)
        numbers.append(number)
    return numbers


def media_type_of(transfer_syntax: str) -> str:
    """The part media type for frames stored in ``transfer_syntax``."""
    return BITSTREAM_MEDIA_TYPES.get(transfer_syntax, OCTET_STREAM)


@dataclass(frozen=True)
class PixelLocation:
    """Where the Pixel Data value is in the stored file and how its frames are laid out."""

    transfer_syntax: UID
    value_offset: int  # file offset of the first byte of the value
    value_length: int | None  # None for encapsulated (undefined length)
    number_of_frames: int
    frame_length: int  # bytes per native frame (0 when encapsulated or bit-packed)
    frame_bits: int  # bits per native frame (what bit-packed frames are sliced by)
    bits_allocated: int
    little_endian: bool
    extended_offsets: tuple[bytes, bytes] | None

    @property
    def encapsulated(self) -> bool:
        return self.value_length is None


def _int(ds: Dataset, keyword: str, default: int) -> int:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def native_frame_length(ds: Dataset) -> int:
    """Bytes per native frame (0 when frames are bit-packed and not byte aligned)."""
    rows, cols = _int(ds, "Rows", 0), _int(ds, "Columns", 0)
    samples, bits = _int(ds, "SamplesPerPixel", 1), _int(ds, "BitsAllocated", 8)
    pixels = rows * cols * samples
    if bits == 1:
        return pixels // 8 if pixels % 8 == 0 else 0
    length = pixels * bits // 8
    if str(ds.get("PhotometricInterpretation", "")) == "YBR_FULL_422":
        length = length // 3 * 2
    return length


def read_header(fp: IO[bytes]) -> tuple[Dataset, PixelLocation | None]:
    """Parse the dataset up to its Pixel Data and locate that value in the file.

    ``fp`` must be seekable and positioned at the start of the stored object. Returns the
    dataset without pixel data and the location, or ``None`` when there is no Pixel Data
    or the file cannot be addressed by offset (deflated). Values over
    :data:`HEADER_DEFER_BYTES` are not read (their value is None until read from ``fp``).
    """
    start = fp.tell()
    ds = dcmread(fp, stop_before_pixels=True, force=True, defer_size=HEADER_DEFER_BYTES)
    meta = getattr(ds, "file_meta", None)
    tsyntax = UID(str(meta.TransferSyntaxUID)) if meta and "TransferSyntaxUID" in meta else None
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        return ds, None
    if tsyntax is None:
        tsyntax = UID(ImplicitVRLittleEndian if implicit else (
            ExplicitVRLittleEndian if little else ExplicitVRBigEndian))
    if tsyntax == DeflatedExplicitVRLittleEndian:
        return ds, None
    position = fp.tell()
    header = fp.read(8)
    if len(header) < 8:
        return ds, None
    endian = "<" if little else ">"
    group, elem = struct.unpack(f"{endian}HH", header[:4])
    if (group << 16 | elem) != PIXEL_DATA:
        return ds, None  # float pixel data, or the end of the dataset
    if implicit:
        (length,) = struct.unpack(f"{endian}L", header[4:8])
        value_offset = position + 8
    elif header[4:6] in _LONG_LENGTH_VRS:
        (length,) = struct.unpack(f"{endian}L", fp.read(4))
        value_offset = position + 12
    else:
        (length,) = struct.unpack(f"{endian}H", header[6:8])
        value_offset = position + 8
    fp.seek(start)
    extended: tuple[bytes, bytes] | None = None
    if EXTENDED_OFFSET_TABLE in ds and EXTENDED_OFFSET_TABLE_LENGTHS in ds:
        extended = (bytes(ds[EXTENDED_OFFSET_TABLE].value),
                    bytes(ds[EXTENDED_OFFSET_TABLE_LENGTHS].value))
    encapsulated = length == UNDEFINED_LENGTH
    return ds, PixelLocation(
        transfer_syntax=tsyntax,
        value_offset=value_offset - start,
        value_length=None if encapsulated else length,
        number_of_frames=max(_int(ds, "NumberOfFrames", 1), 1),
        frame_length=0 if encapsulated else native_frame_length(ds),
        frame_bits=(_int(ds, "Rows", 0) * _int(ds, "Columns", 0)
                    * _int(ds, "SamplesPerPixel", 1) * _int(ds, "BitsAllocated", 8)),
        bits_allocated=_int(ds, "BitsAllocated", 8),
        little_endian=little,
        extended_offsets=extended,
    )


def check_frames(numbers: list[int], number_of_frames: int) -> None:
    """:class:`FrameError` unless every number names one of the object's frames."""
    plural = "s" if number_of_frames != 1 else ""
    if len(numbers) > number_of_frames:
        raise FrameError(f"{len(numbers)} frames asked for: the instance has "
                         f"{number_of_frames} frame{plural}")
    beyond = [n for n in numbers if n > number_of_frames]
    if beyond:
        raise FrameError(
            f"frame {beyond[0]} does not exist: the instance has {number_of_frames} "
            f"frame{plural}"
        )


def stored_frame(fp: IO[bytes], location: PixelLocation, index: int) -> bytes:
    """Frame ``index`` (0-based) exactly as stored: a native slice or the encoded bitstream.

    ``fp`` is positioned anywhere; offsets are relative to the object's start at 0.
    """
    if location.encapsulated:
        fp.seek(location.value_offset)
        return get_frame(fp, index, number_of_frames=location.number_of_frames,
                         extended_offsets=location.extended_offsets)
    if location.frame_length:
        fp.seek(location.value_offset + index * location.frame_length)
        data = fp.read(location.frame_length)
        if len(data) != location.frame_length:
            raise FrameError(f"frame {index + 1} is cut short in the stored file")
        return data
    # Bit-packed frames that do not start on a byte boundary (BitsAllocated 1): read the
    # bytes that hold the frame's bits, never the whole value.
    import numpy as np

    start = index * location.frame_bits
    first, last = start // 8, (start + location.frame_bits + 7) // 8
    fp.seek(location.value_offset + first)
    data = fp.read(last - first)
    if len(data) != last - first:
        raise FrameError(f"frame {index + 1} is cut short in the stored file")
    bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
    offset = start - first * 8
    return np.packbits(bits[offset:offset + location.frame_bits], bitorder="little").tobytes()


def native_frame(fp: IO[bytes], header: Dataset, location: PixelLocation | None,
                 index: int) -> bytes:
    """Frame ``index`` as uncompressed little endian bytes (Explicit VR Little Endian).

    Native little endian frames are sliced from the file; anything else is decoded.
    """
    if location and not location.encapsulated and location.little_endian:
        return stored_frame(fp, location, index)
    return decoded_frame(fp, index).tobytes()


def decoded_frame(fp: IO[bytes], index: int) -> np.ndarray:
    """Frame ``index`` decoded to an array (YCbCr converted to RGB), as pydicom gives it."""
    fp.seek(0)
    arr = pixel_array(cast(BinaryIO, fp), index=index)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return arr


def part10_header(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> bytes:
    """Preamble, ``DICM`` and a File Meta Information group for a bare stored dataset.

    PS3.18 defines ``application/dicom`` as the PS3.10 file format, so a dataset stored as
    it came over DIMSE (without meta) is served with this header in front of its
    unchanged bytes. The stored bytes and their checksum are never rewritten.
    """
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    buffer = BytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)  # type: ignore[arg-type]
    return buffer.getvalue()


def can_transcode(source: str, target: str) -> bool:
    """Whether :func:`transcode` may be asked to go from ``source`` to ``target``."""
    return target == source or target in TRANSCODE_TARGETS


def transcode(fp: IO[bytes], target: str, out: IO[bytes]) -> None:
    """The object read from ``fp`` re-encoded as a Part 10 file in ``target``, into ``out``.

    ``out`` is a file the caller streams from afterwards (a cache entry or a spooled
    temporary file), so a transcoded copy is never held as one more whole ``bytes`` next
    to the decoded pixels.

    Encapsulated pixel data is decoded with the installed plugins (pylibjpeg, pyjpegls)
    and re-encoded for compressed targets (RLE, JPEG-LS and JPEG 2000, lossless only).
    The SOP Instance UID is kept: the object is the same, only its encoding differs.
    Raises :class:`CannotTranscode`.
    """
    target_uid = UID(target)
    if target_uid not in TRANSCODE_TARGETS:
        raise CannotTranscode(f"transcoding to {target} is not offered")
    fp.seek(0)
    try:
        ds = dcmread(fp, force=True)
        if not hasattr(ds, "file_meta") or "TransferSyntaxUID" not in ds.file_meta:
            implicit, little = ds.original_encoding
            ds.file_meta = ds.get("file_meta") or FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = UID(
                ImplicitVRLittleEndian if implicit else
                ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
        source = UID(str(ds.file_meta.TransferSyntaxUID))
        has_pixels = "PixelData" in ds
        if has_pixels and source.is_compressed and source != target_uid:
            ds.decompress(generate_instance_uid=False)
        elif has_pixels and not source.is_little_endian:
            # Native byte order arrays on a little endian machine; the values stay as stored.
            ds.PixelData = pixel_array(ds, raw=True).astype("<u2" if ds.BitsAllocated == 16
                                                            else None).tobytes()
        if target_uid.is_compressed and source != target_uid:
            if not has_pixels:
                raise CannotTranscode("an object without pixel data cannot be compressed")
            if target_uid in HTJ2K_TARGETS:
                _compress_htj2k(ds, target_uid)
            else:
                ds.compress(target_uid, generate_instance_uid=False)
        ds.file_meta.TransferSyntaxUID = target_uid
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(out, enforce_file_format=True,
                   implicit_vr=target_uid.is_implicit_VR, little_endian=True)
    except CannotTranscode:
        raise
    except Exception as exc:  # plugins raise many types on unsupported images
        raise CannotTranscode(f"cannot transcode to {target}: {exc}") from exc


def _compress_htj2k(ds: Dataset, target: UID) -> None:
    """``ds``'s native pixel data (little endian) encapsulated as HTJ2K lossless frames.

    Colour frames are coded without the colour transform, so Photometric Interpretation
    stays as it is (RGB); planar colour data is refused by the encoder.
    """
    from .frame_codecs import CannotEncode, Layout, encode

    layout = Layout.of(ds)
    size = (layout.rows * layout.columns * layout.samples_per_pixel
            * (layout.bits_allocated // 8))
    count = int(ds.get("NumberOfFrames") or 1)
    data = ds.PixelData
    try:
        frames = [encode(bytes(data[n * size:(n + 1) * size]), layout, target,
                         colour_transform=False) for n in range(count)]
    except CannotEncode as exc:
        raise CannotTranscode(str(exc)) from exc
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
