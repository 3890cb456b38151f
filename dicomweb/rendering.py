"""Rendered images for WADO-RS ``/rendered`` and ``/thumbnail`` (pydicom, NumPy, Pillow).

A decoded frame goes through the Modality LUT (rescale slope and intercept, or a LUT),
then a VOI window (from the ``window=center,width,function`` query parameter, else the
dataset's first Window Center/Width, else the frame's own range), MONOCHROME1 is
inverted, and the 8-bit result is scaled into ``viewport`` and encoded as JPEG or PNG.
Pure code: it never opens files or touches the database.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from io import BytesIO
from typing import IO

import numpy as np
from PIL import Image, ImageOps
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut

from imaging.paging import whole_number

JPEG = "image/jpeg"
PNG = "image/png"
MEDIA_TYPES = (JPEG, PNG)
WINDOW_FUNCTIONS = ("linear", "linear-exact", "sigmoid")
THUMBNAIL_SIZE = (128, 128)
MAX_VIEWPORT = 8192


@dataclass(frozen=True)
class Window:
    center: float
    width: float
    function: str = "linear"


@dataclass(frozen=True)
class RenderOptions:
    window: Window | None = None
    viewport: tuple[int, int] | None = None
    quality: int = 90


def parse_options(query: Mapping[str, str]) -> RenderOptions:
    """The rendering query parameters of PS3.18 8.3.5.1; ``ValueError`` says what is wrong."""
    window = None
    if query.get("window"):
        parts = [p.strip() for p in query["window"].split(",")]
        if len(parts) not in (2, 3):
            raise ValueError("window is center,width[,function]")
        try:
            center, width = float(parts[0]), float(parts[1])
        except ValueError:
            raise ValueError("window center and width must be numbers") from None
        if not (math.isfinite(center) and math.isfinite(width)):
            raise ValueError("window center and width must be finite numbers")
        function = parts[2].lower() if len(parts) == 3 else "linear"
        if function not in WINDOW_FUNCTIONS:
            raise ValueError(f"window function is one of {', '.join(WINDOW_FUNCTIONS)}")
        if width <= 0 or (function == "linear" and width < 1):
            raise ValueError("window width must be positive (at least 1 for linear)")
        window = Window(center, width, function)
    viewport = None
    if query.get("viewport"):
        parts = [p.strip() for p in query["viewport"].split(",")]
        if len(parts) != 2 or not all(parts):
            raise ValueError("viewport is width,height in pixels")
        vw, vh = (whole_number("viewport", p, default=0, minimum=1, maximum=MAX_VIEWPORT)
                  for p in parts)
        viewport = (vw, vh)
    quality = 90
    if query.get("quality"):
        quality = whole_number("quality", query["quality"], default=90, minimum=1,
                               maximum=100)
    return RenderOptions(window, viewport, quality)


def _first(value: object) -> float | None:
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if value else None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def default_window(ds: Dataset, values: np.ndarray) -> Window:
    """The dataset's first window, or one spanning the frame's values."""
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is not None and width is not None and width >= 1:
        function = str(ds.get("VOILUTFunction", "LINEAR")).lower().replace("_", "-")
        return Window(center, width, function if function in WINDOW_FUNCTIONS else "linear")
    low, high = float(values.min()), float(values.max())
    return Window((low + high) / 2, max(high - low, 1.0), "linear")


def apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """Map values to 0..255 as PS3.3 C.11.2.1.2 (linear, linear exact) and C.11.2.1.3.1."""
    x = values.astype(np.float64, copy=False)
    c, w = window.center, window.width
    out: np.ndarray
    if window.function == "sigmoid":
        out = 255.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
    elif window.function == "linear-exact":
        out = ((x - c) / w + 0.5) * 255.0
    else:
        out = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255.0 if w > 1 else (x >= c) * 255.0
    return np.clip(out, 0, 255).astype(np.uint8)


def to_image(ds: Dataset, frame: np.ndarray, options: RenderOptions) -> Image.Image:
    """One decoded frame (as pydicom gives it: YCbCr already RGB) as an 8-bit image."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        frame = apply_color_lut(frame, ds)
        if frame.dtype != np.uint8:
            frame = (frame >> 8).astype(np.uint8)
        return Image.fromarray(frame, "RGB")
    if frame.ndim == 3:  # RGB (pydicom converted YBR)
        if options.window is not None:
            rgb = apply_window(frame, options.window)
        elif frame.dtype == np.uint8:
            rgb = frame
        else:
            bits = int(ds.get("BitsStored", 16))
            scale = 255.0 / ((1 << bits) - 1)
            rgb = np.clip(frame.astype(np.float64) * scale, 0, 255).astype(np.uint8)
        return Image.fromarray(np.ascontiguousarray(rgb[..., :3]), "RGB")
    values = apply_modality_lut(frame, ds)
    window = options.window or default_window(ds, values)
    grey = apply_window(values, window)
    if photometric == "MONOCHROME1":
        grey = 255 - grey
    return Image.fromarray(np.ascontiguousarray(grey), "L")


def fit(image: Image.Image, viewport: tuple[int, int] | None) -> Image.Image:
    """Scale into ``viewport`` keeping the aspect ratio (PS3.18 8.3.5.1.3)."""
    if viewport is None or image.size == viewport:
        return image
    return ImageOps.contain(image, viewport, Image.Resampling.BILINEAR)


def encode(image: Image.Image, media_type: str, quality: int) -> bytes:
    out = BytesIO()
    if media_type == JPEG:
        image.save(out, "JPEG", quality=quality)
    elif media_type == PNG:
        image.save(out, "PNG", compress_level=1)
    else:
        raise ValueError(f"cannot render {media_type}")
    return out.getvalue()


def render(ds: Dataset, frame: np.ndarray, media_type: str, options: RenderOptions) -> bytes:
    """The frame as a ``media_type`` image (JPEG or PNG) with ``options`` applied."""
    return encode(fit(to_image(ds, frame, options), options.viewport), media_type,
                  options.quality)


def render_preview(
    fp: IO[bytes], index: int, *, window: Window | None, viewport: tuple[int, int],
    quality: int, enlarge: bool = False,
) -> bytes:
    """Frame ``index`` (from 0) of the DICOM file ``fp`` as a JPEG for a page.

    Images larger than ``viewport`` are scaled into it; smaller ones keep their size unless
    ``enlarge`` (thumbnails). The patient portal and shares to outside doctors both show
    frames this way.
    """
    from . import frames  # frames reads files; this module otherwise works on arrays

    header, _location = frames.read_header(fp)
    pixels = frames.decoded_frame(fp, index)
    large = max(int(header.get("Rows", 0)), int(header.get("Columns", 0))) > viewport[0]
    options = RenderOptions(window=window, viewport=viewport if large or enlarge else None,
                            quality=quality)
    return render(header, pixels, JPEG, options)
