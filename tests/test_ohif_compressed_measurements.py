"""OHIF draws and measures CT stored compressed as it was received.

The archive keeps each object in its transfer syntax and answers OHIF's frame requests
(``Accept: multipart/related; type="application/octet-stream"; transfer-syntax=*``) with the
stored bitstream, typed by its media type (``image/jpeg``, ``image/jls``, ``image/jp2``,
``image/dicom-rle``); OHIF's codecs decode it in the browser. For each syntax the canvas
shows the image and an ellipse ROI in the phantom's soft tissue reads its known HU: exactly
(within the noise of the sample) when lossless, within the quantisation of 8 bits for JPEG
baseline.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Response

from dicomweb.frames import BITSTREAM_MEDIA_TYPES
from imaging.ingest import ingest
from imaging.models import Instance

from .conftest import PAULA
from .encoded_ct import LOSSY, SOFT_TISSUE_HU, can_encode, write_ct_study
from .ohif_support import (
    NO_TOUR,
    annotation_texts,
    drag,
    ellipse_statistics,
    open_study,
    pick_tool,
)
from .test_ohif_viewer import ohif_dist, signed_in_viewer  # noqa: F401  (fixture)

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SYNTAXES = {
    "1.2.840.10008.1.2.4.50": "JPEG Baseline",
    "1.2.840.10008.1.2.4.57": "JPEG Lossless",
    "1.2.840.10008.1.2.4.70": "JPEG Lossless SV1",
    "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless",
    "1.2.840.10008.1.2.5": "RLE Lossless",
}


@pytest.fixture
def page(browser: Browser, live_server, alice, ohif_dist) -> Iterator[Page]:  # noqa: F811
    for page in signed_in_viewer(browser, live_server):
        page.context.add_init_script(NO_TOUR)
        page.set_default_timeout(30_000)
        yield page


@pytest.mark.parametrize("transfer_syntax", list(SYNTAXES), ids=list(SYNTAXES.values()))
def test_ohif_measures_hu_on_ct_stored_compressed(page: Page, live_server, transactional_db,
                                                  tmp_path: Path, transfer_syntax: str):
    if not can_encode(transfer_syntax):
        pytest.skip(f"no encoder for {transfer_syntax} (DCMTK's dcmcjpeg)")
    study_uid, paths = write_ct_study(tmp_path, PAULA, transfer_syntax,
                                      description=SYNTAXES[transfer_syntax])
    for path in paths:
        with path.open("rb") as fp:
            assert ingest(fp, source="test:ohif-codecs").accepted
    assert set(Instance.objects.values_list("transfer_syntax_uid", flat=True)) == {
        transfer_syntax}
    frames: list[Response] = []
    page.on("response", lambda r: frames.append(r) if "/frames/" in r.url else None)

    centre = open_study(page, live_server, study_uid)  # waits for a non-blank canvas
    pick_tool(page, "EllipticalROI")
    drag(page, (centre["x"], centre["y"] - 60), (centre["x"] + 25, centre["y"] + 10))
    page.locator("[data-cy=viewport-pane] svg text", has_text="Mean").wait_for()
    page.wait_for_timeout(300)  # the last drag step's statistics

    (ellipse,) = [t for t in annotation_texts(page) if "Mean" in t]
    stats = ellipse_statistics(ellipse)
    tolerance = 8 if transfer_syntax in LOSSY else 3
    assert abs(stats["Mean"] - SOFT_TISSUE_HU) < tolerance, ellipse
    assert frames and all(r.status == 200 for r in frames)
    part_type = f'type="{BITSTREAM_MEDIA_TYPES[transfer_syntax]}"'
    assert all(part_type in r.headers["content-type"] for r in frames), [
        r.headers["content-type"] for r in frames]
