"""Lossless compressed frames made from stored native pixel data, and the disk cache that
keeps them (and whole transcoded instances) so a second viewer gets a frame without a
second encode.

A viewer on a slow link waits for bytes, not for the server: a 512x512 16-bit CT frame is
512 KiB native and about a third of that as JPEG-LS. The stored object is never touched;
the encoded frame is a copy, keyed by the stored object's SHA-256, the frame number and
the transfer syntax, so a changed object can never be answered from a stale entry.

Encoding goes through pydicom's encoders (pyjpegls for JPEG-LS, pydicom's own RLE,
pylibjpeg-openjpeg for JPEG 2000), which check that the image can be represented, and
OpenJPH through imagecodecs for HTJ2K lossless, which pydicom cannot encode: a frame they
refuse (YBR_FULL_422, 1-bit, values outside Bits Stored) is served as it is today.
"""

from __future__ import annotations

import errno
import importlib
import logging
import math
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from django.conf import settings
from pydicom.dataset import Dataset
from pydicom.pixels.encoders.base import get_encoder
from pydicom.uid import (
    UID,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

log = logging.getLogger(__name__)

# What a frame may be transcoded to, all lossless, with its PS3.18 media type (Table
# 8.7.3-5). Both HTJ2K lossless syntaxes are image/jphc; the first is its default.
ENCODABLE: dict[str, str] = {
    JPEGLSLossless: "image/jls",
    RLELossless: "image/dicom-rle",
    JPEG2000Lossless: "image/jp2",
    HTJ2KLossless: "image/jphc",
    HTJ2KLosslessRPCL: "image/jphc",
}
_HTJ2K = (HTJ2KLossless, HTJ2KLosslessRPCL)
# Errors of the cache's own disk: the copy is made in a temporary file instead.
_CACHE_DISK_REFUSED = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
# An empty cache file says "this frame cannot be encoded so": no second attempt.
_CANNOT = b""
# Evict after this many writes by one process (a directory scan costs a few ms).
_EVICT_EVERY = 64


class CannotEncode(ValueError):
    """The image cannot be represented losslessly in the asked transfer syntax."""


@dataclass(frozen=True)
class Layout:
    """What an encoder needs to know about a native frame (PS3.3 Image Pixel module)."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric_interpretation: str
    planar_configuration: int

    @classmethod
    def of(cls, ds: Dataset) -> Layout:
        def number(keyword: str, default: int) -> int:
            value = ds.get(keyword)
            try:
                return int(value) if value not in (None, "") else default
            except (TypeError, ValueError):
                return default

        bits_allocated = number("BitsAllocated", 0)
        return cls(
            rows=number("Rows", 0), columns=number("Columns", 0),
            samples_per_pixel=number("SamplesPerPixel", 1), bits_allocated=bits_allocated,
            bits_stored=number("BitsStored", bits_allocated),
            pixel_representation=number("PixelRepresentation", 0),
            photometric_interpretation=str(ds.get("PhotometricInterpretation", "")),
            planar_configuration=number("PlanarConfiguration", 0),
        )


def check_encodable(layout: Layout, syntax: str) -> None:
    """:class:`CannotEncode` when no frame of this layout can be given in ``syntax``
    (known from the header alone, so a client that asked for it gets a 406 up front)."""
    if syntax not in ENCODABLE:
        raise CannotEncode(f"frames are not transcoded to {syntax}")
    if not (_openjph() is not None if syntax in _HTJ2K
            else get_encoder(UID(syntax)).is_available):
        raise CannotEncode(f"no encoder for {syntax} is installed")
    if layout.bits_allocated not in (8, 16) or not layout.rows or not layout.columns:
        raise CannotEncode(f"{layout.bits_allocated}-bit pixels are not transcoded")
    if layout.photometric_interpretation not in ("MONOCHROME1", "MONOCHROME2",
                                                 "PALETTE COLOR", "RGB"):
        raise CannotEncode(f"{layout.photometric_interpretation} is not transcoded")
    if layout.samples_per_pixel not in (1, 3):
        raise CannotEncode(f"{layout.samples_per_pixel} samples per pixel")
    if layout.samples_per_pixel == 3 and layout.planar_configuration != 0:
        # The metadata a viewer decodes with says planar; the codecs give interleaved.
        raise CannotEncode("colour planes stored one after the other are not transcoded")


def check_values(native: bytes, layout: Layout) -> None:
    """:class:`CannotEncode` unless every value fits in Bits Stored.

    The codecs code only Bits Stored bits: a value beyond them (overlay bits in the unused
    high bits, a signed value not sign-extended) would come back changed, not lossless.
    """
    if layout.bits_stored >= layout.bits_allocated:
        return
    signed = layout.pixel_representation == 1
    dtype = f"<{'i' if signed else 'u'}{layout.bits_allocated // 8}"
    values = np.frombuffer(native, dtype=dtype)
    if not values.size:
        return
    low, high = ((-(1 << (layout.bits_stored - 1)), (1 << (layout.bits_stored - 1)) - 1)
                 if signed else (0, (1 << layout.bits_stored) - 1))
    if int(values.min()) < low or int(values.max()) > high:
        raise CannotEncode(f"values outside the {layout.bits_stored} bits stored")


def encode(native: bytes, layout: Layout, syntax: str, *, colour_transform: bool = True
           ) -> bytes:
    """One native little endian frame as a ``syntax`` bitstream; :class:`CannotEncode`.

    ``colour_transform=False``: an HTJ2K colour frame is coded without the reversible
    colour transform, so an object made of such frames keeps Photometric Interpretation
    RGB (with it, the object would have to say YBR_RCT).
    """
    check_encodable(layout, syntax)
    check_values(native, layout)
    if syntax in _HTJ2K:
        return _htj2k(native, layout, rpcl=syntax == HTJ2KLosslessRPCL,
                      colour_transform=colour_transform)
    try:
        return bytes(get_encoder(UID(syntax)).encode(
            native, rows=layout.rows, columns=layout.columns,
            samples_per_pixel=layout.samples_per_pixel,
            bits_allocated=layout.bits_allocated, bits_stored=layout.bits_stored,
            pixel_representation=layout.pixel_representation,
            photometric_interpretation=layout.photometric_interpretation,
            planar_configuration=layout.planar_configuration, number_of_frames=1,
        ))
    except Exception as exc:  # the encoders raise ValueError, RuntimeError, ...
        raise CannotEncode(f"cannot encode the frame as {syntax}: {exc}") from exc


def _openjph() -> Any:
    """imagecodecs, imported on the first HTJ2K request (its import costs every process
    about 0.13 s at start); None when it is missing or built without OpenJPH."""
    try:
        codecs = importlib.import_module("imagecodecs")
    except ImportError:
        return None
    return codecs if codecs.HTJ2K.available else None


def _htj2k(native: bytes, layout: Layout, *, rpcl: bool, colour_transform: bool = True
           ) -> bytes:
    """HTJ2K with the reversible wavelet (and, for RGB, the reversible colour transform).

    OpenJPH codes the whole sample width (16 bits for 12 stored), so every value that
    passed :func:`check_values` survives. The bitstream is decoded again before it is
    kept: OpenJPH is young, and a frame that did not come back is served native instead.
    RPCL (PS3.5 10.18) also needs TLM markers and enough decompositions for the smallest
    resolution to be at most 64 pixels on a side.
    """
    codecs = _openjph()
    signed = layout.pixel_representation == 1
    dtype = np.dtype(f"<{'i' if signed else 'u'}{layout.bits_allocated // 8}")
    shape: tuple[int, ...] = (layout.rows, layout.columns)
    if layout.samples_per_pixel == 3:
        shape += (3,)
    options: dict[str, Any] = {}
    if layout.samples_per_pixel == 3 and not colour_transform:
        options["rgb"] = False
    if rpcl:
        longest = max(layout.rows, layout.columns)
        options.update(resolutions=max(5, math.ceil(math.log2(longest / 64))), tlm=True)
    try:
        array = np.frombuffer(native, dtype=dtype).reshape(shape)
        data = bytes(codecs.htj2k_encode(array, reversible=True, **options))
        decoded = codecs.htj2k_decode(data)
        if options.get("rgb") is False:
            decoded = np.moveaxis(decoded, 0, -1)  # without the colour transform: planar
        exact = np.array_equal(decoded, array)
    except Exception as exc:  # imagecodecs raises its own error types
        raise CannotEncode(f"cannot encode the frame as HTJ2K: {exc}") from exc
    if not exact:
        raise CannotEncode("the HTJ2K frame did not decode to the stored pixels")
    return data


def _touch(path: Path) -> None:
    """Mark a cache entry as just read (eviction takes the least recently read first)."""
    try:
        os.utime(path)
    except OSError:
        pass


class FrameCache:
    """Encoded frames on disk, bounded by size, shared by every process on the host.

    Files are written to a temporary name and renamed into place, so a reader sees a whole
    entry or none. A hit refreshes the file's time; eviction removes the oldest entries
    once the total passes the limit, down to nine tenths of it. Two processes encoding the
    same frame at once both write it; the second rename wins with identical bytes.
    """

    def __init__(self, root: Path, limit: int) -> None:
        self.root = root
        self.limit = limit
        self._writes = 0
        self._lock = threading.Lock()

    def path(self, sha256: str, frame: int, syntax: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}-{frame}-{syntax}"

    def get(self, sha256: str, frame: int, syntax: str) -> bytes | None:
        """The cached bitstream; ``b""`` when the frame is known not to encode; None."""
        path = self.path(sha256, frame, syntax)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        _touch(path)
        return data

    def put(self, sha256: str, frame: int, syntax: str, data: bytes) -> None:
        if self.limit <= 0:
            return
        path = self.path(sha256, frame, syntax)
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_bytes(data)
            os.replace(temporary, path)
        except OSError as exc:  # a full or read-only disk costs an encode, not the answer
            log.warning("frame cache: cannot write %s: %s", path.name, exc)
            temporary.unlink(missing_ok=True)
            return
        self._count_write()

    def object_path(self, sha256: str, syntax: str) -> Path:
        """Where the whole object ``sha256`` transcoded to ``syntax`` is kept."""
        return self.root / sha256[:2] / f"{sha256}-object-{syntax}"

    def open_object(self, sha256: str, syntax: str) -> IO[bytes] | None:
        """The cached transcoded object, open at its start; None on a miss."""
        path = self.object_path(sha256, syntax)
        try:
            fp = path.open("rb")
        except OSError:
            return None
        _touch(path)
        return fp

    def put_object(self, sha256: str, syntax: str,
                   write: Callable[[IO[bytes]], None]) -> IO[bytes] | None:
        """A new entry written by ``write`` straight to disk, then open at its start.

        None when the cache is off or its disk refuses the entry (cannot be written, full,
        read-only: the caller makes a temporary copy instead). Whatever else ``write``
        raises is raised, with nothing kept.
        An entry evicted while it is being read stays readable until it is closed.
        """
        if self.limit <= 0:
            return None
        path = self.object_path(sha256, syntax)
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            out = temporary.open("wb")
        except OSError as exc:
            log.warning("frame cache: cannot write %s: %s", path.name, exc)
            return None
        try:
            with out:
                write(out)
            os.replace(temporary, path)
            fp = path.open("rb")
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            if exc.errno not in _CACHE_DISK_REFUSED:
                raise
            # The cache's disk is full (or read-only): a temporary copy serves this one.
            log.warning("frame cache: cannot keep %s: %s", path.name, exc)
            return None
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        # One object can be most of the limit: checked after each, not every 64th.
        self.evict()
        return fp

    def _count_write(self) -> None:
        with self._lock:
            self._writes += 1
            due = self._writes % _EVICT_EVERY == 1
        if due:
            self.evict()

    def forget(self, sha256: str) -> None:
        """Every cached frame and copy of the object ``sha256`` removed (it was deleted)."""
        for path in (self.root / sha256[:2]).glob(f"{sha256}-*"):
            path.unlink(missing_ok=True)

    def evict(self) -> None:
        """Oldest entries removed until the cache is under nine tenths of its limit."""
        entries: list[tuple[float, int, Path]] = []
        for folder in self.root.glob("??"):
            try:
                with os.scandir(folder) as listing:
                    for entry in listing:
                        try:
                            stat = entry.stat()
                        except OSError:
                            continue
                        entries.append((stat.st_mtime, stat.st_size, Path(entry.path)))
            except OSError:
                continue
        total = sum(size for _, size, _ in entries)
        if total <= self.limit:
            return
        for _, size, path in sorted(entries):
            path.unlink(missing_ok=True)
            total -= size
            if total <= self.limit * 0.9:
                break


_cache: FrameCache | None = None


def cache() -> FrameCache:
    """The process's cache, from ``WADO_FRAME_CACHE_DIR`` and ``WADO_FRAME_CACHE_BYTES``."""
    global _cache
    root = Path(settings.WADO_FRAME_CACHE_DIR)
    if _cache is None or _cache.root != root or _cache.limit != settings.WADO_FRAME_CACHE_BYTES:
        _cache = FrameCache(root, settings.WADO_FRAME_CACHE_BYTES)
    return _cache


def forget_deleted(sha256s: list[str]) -> None:
    """Cached frames of deleted objects go with them: they are the patient's pixels."""
    store = cache()
    for sha256 in sha256s:
        if sha256:
            store.forget(sha256)


def compressed_frame(sha256: str, frame: int, syntax: str, layout: Layout,
                     read_native: Callable[[], bytes]) -> bytes | None:
    """Frame ``frame`` (1-based) as ``syntax``: from the cache, else encoded and kept.

    ``read_native`` gives the native frame; it is called only on a miss. None when the
    frame cannot be encoded so (the caller serves it as before).
    """
    store = cache()
    cached = store.get(sha256, frame, syntax)
    if cached is not None:
        return cached or None
    try:
        data = encode(read_native(), layout, syntax)
    except CannotEncode as exc:
        log.info("frame %s of %s stays native: %s", frame, sha256[:12], exc)
        store.put(sha256, frame, syntax, _CANNOT)
        return None
    store.put(sha256, frame, syntax, data)
    return data


def transcoded_object(sha256: str, syntax: str,
                      transcode: Callable[[IO[bytes]], None]) -> IO[bytes] | None:
    """The object ``sha256`` in ``syntax``, open at its start: from the cache, else made by
    ``transcode`` (which writes it to the file it is given) and kept.

    None when the cache cannot keep it (off, or its disk refuses); what ``transcode``
    raises is raised. The caller closes the file.
    """
    store = cache()
    cached = store.open_object(sha256, syntax)
    if cached is not None:
        return cached
    return store.put_object(sha256, syntax, transcode)
