"""OHIF in Chromium draws a study stored uncompressed and served with compressed frames.

OHIF asks every frame with ``transfer-syntax=*``; the archive answers native frames with
lossless JPEG-LS (``image/jls``, made on the fly and cached) and OHIF's CharLS decoder draws
them. The ellipse ROI in the phantom's soft tissue reads its known HU, so the pixels and
the CT rescale survived the trip exactly; a second viewing is answered from the cache.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Response

from imaging.ingest import ingest
from imaging.models import Instance

from .conftest import PAULA
from .encoded_ct import SOFT_TISSUE_HU, write_ct_study
from .ohif_support import NO_TOUR, annotation_texts, drag, ellipse_statistics, open_study, pick_tool
from .test_ohif_viewer import ohif_dist, signed_in_viewer  # noqa: F401  (fixture)

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

pytestmark = [pytest.mark.browser, pytest.mark.slow]

JPEG_LS = "1.2.840.10008.1.2.4.80"


@pytest.fixture
def page(browser: Browser, live_server, alice, ohif_dist) -> Iterator[Page]:  # noqa: F811
    for page in signed_in_viewer(browser, live_server):
        page.context.add_init_script(NO_TOUR)
        page.set_default_timeout(30_000)
        yield page


def test_ohif_draws_native_ct_served_as_jpeg_ls_frames(page: Page, live_server,
                                                       transactional_db, tmp_path: Path,
                                                       settings):
    settings.WADO_FRAMES_LAN_NETWORKS = []  # Chromium on loopback stands for a remote site
    study_uid, paths = write_ct_study(tmp_path, PAULA, None, slices=3,
                                      description="Native CT")
    for path in paths:
        with path.open("rb") as fp:
            assert ingest(fp, source="test:ohif-compressed-frames").accepted
    assert set(Instance.objects.values_list("transfer_syntax_uid", flat=True)) == {
        "1.2.840.10008.1.2.1"}
    frames: list[Response] = []
    page.on("response", lambda r: frames.append(r) if "/frames/" in r.url else None)

    centre = open_study(page, live_server, study_uid)  # waits for a non-blank canvas
    pick_tool(page, "EllipticalROI")
    drag(page, (centre["x"], centre["y"] - 60), (centre["x"] + 25, centre["y"] + 10))
    page.locator("[data-cy=viewport-pane] svg text", has_text="Mean").wait_for()
    page.wait_for_timeout(300)  # the last drag step's statistics

    (ellipse,) = [t for t in annotation_texts(page) if "Mean" in t]
    assert abs(ellipse_statistics(ellipse)["Mean"] - SOFT_TISSUE_HU) < 3, ellipse
    assert frames and all(r.status == 200 for r in frames)
    assert all('type="image/jls"' in r.headers["content-type"] for r in frames), [
        r.headers["content-type"] for r in frames]
    body = frames[0].body()
    assert f"Content-Type: image/jls; transfer-syntax={JPEG_LS}".encode() in body
    assert int(frames[0].headers["content-length"]) == len(body)
    cached = list(Path(settings.WADO_FRAME_CACHE_DIR).rglob(f"*-1-{JPEG_LS}"))
    assert len(cached) == len({r.url for r in frames})
