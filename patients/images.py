"""The patient's image viewer: which frames a study has, and one frame as a JPEG.

Only rendered 8-bit images leave the portal; the stored objects and their pixel data stay
in it. Rendering is :mod:`dicomweb.rendering` (pure) on a frame decoded by
:mod:`dicomweb.frames`; access is decided by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import F

from dicomweb import rendering
from imaging import blobs
from imaging.models import Instance, Series, Study

VIEWPORT = (1024, 1024)
THUMBNAIL = rendering.THUMBNAIL_SIZE
QUALITY = 88


@dataclass(frozen=True)
class Preset:
    name: str
    window: rendering.Window | None  # None: the image's own window


# CT windows as radiologists name them (Hounsfield units); other modalities use their own.
CT_PRESETS = (
    Preset("default", None),
    Preset("soft_tissue", rendering.Window(40, 400)),
    Preset("lung", rendering.Window(-600, 1500)),
    Preset("bone", rendering.Window(400, 1800)),
    Preset("brain", rendering.Window(40, 80)),
)
PRESETS = {p.name: p for p in CT_PRESETS}


class CannotRender(ValueError):
    """No pixel data, a codec missing, or a frame out of range."""


def slices(study: Study) -> list[dict[str, Any]]:
    """For each series with images: its label and its frames in viewing order."""
    result = []
    for series in Series.objects.filter(study=study).order_by(
            F("series_number").asc(nulls_last=True), "pk"):
        images = (Instance.objects.filter(series=series).exclude(rows=None)
                  .order_by(F("instance_number").asc(nulls_last=True), "pk")
                  .values_list("sop_instance_uid", "number_of_frames"))
        frames_ = [[uid, index] for uid, count in images for index in range(max(count, 1))]
        if frames_:
            result.append({"uid": series.series_instance_uid, "modality": series.modality,
                           "number": series.series_number, "description": series.description,
                           "frames": frames_})
    return result


def render_frame(instance: Instance, index: int, *, preset: str = "default",
                 thumbnail: bool = False) -> bytes:
    """Frame ``index`` (from 0) of ``instance`` as a JPEG that fits the viewer."""
    window = PRESETS.get(preset, PRESETS["default"]).window
    if index < 0 or index >= max(instance.number_of_frames, 1):
        raise CannotRender("no such frame")
    try:
        with blobs.open_blob(instance.blob_key) as fp:
            return rendering.render_preview(
                fp, index, window=window, viewport=THUMBNAIL if thumbnail else VIEWPORT,
                quality=QUALITY, enlarge=thumbnail,
            )
    except Exception as exc:  # no pixel data, or no codec for it
        raise CannotRender(str(exc)) from exc
