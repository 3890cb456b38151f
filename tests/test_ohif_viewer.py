"""OHIF v3 shows the archive's studies through its standard DICOMweb data source.

The prebuilt OHIF viewer (npm ``@ohif/app``, fetched by ``bin/fetch-ohif``) is served by the
portal under /viewer/, same origin as /dicomweb/, so the doctor's portal session
authenticates OHIF's requests. Headless Chromium signs in, opens a study and the study list
as a person would, and every DICOMweb request OHIF makes must succeed.
"""

from __future__ import annotations

import datetime
import io
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from django.conf import settings
from playwright.sync_api import Browser, Page, Response

from imaging.ingest import ingest
from imaging.synthetic import SeriesSpec, write_study

from .conftest import PASSWORD, PAULA, close_and_settle

# Playwright's sync API runs an event loop in this thread; the ORM calls are synchronous.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
FIRST_IMAGE_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def ohif_dist() -> Path:
    """OHIF's dist/, fetched with bin/fetch-ohif when it is not there yet."""
    dist = Path(settings.OHIF_DIST)
    if not (dist / "index.html").is_file():
        if shutil.which("npm") is None:
            pytest.skip(f"no OHIF build in {dist} and no npm to fetch one (bin/fetch-ohif)")
        subprocess.run([str(REPO / "bin" / "fetch-ohif")], check=True, timeout=600)
    assert (dist / "index.html").is_file()
    return dist




@pytest.fixture
def studies(transactional_db, tmp_path: Path) -> dict[str, str]:
    """paula's current CT (two series) and her CT of a year before, in the archive."""
    uids = {}
    for name, date, series in [
        ("current", datetime.date(2026, 3, 2),
         [SeriesSpec("CT", 8, size=256, description="Axial 2.5"),
          SeriesSpec("CT", 4, size=256, description="Scout")]),
        ("prior", datetime.date(2025, 3, 1),
         [SeriesSpec("CT", 6, size=256, description="Axial prior")]),
    ]:
        uid, paths = write_study(tmp_path / name, PAULA, series, study_date=date,
                                 accession=f"ACC-OHIF-{name}", description=f"CT tórax {name}")
        for path in paths:
            with path.open("rb") as fp:
                assert ingest(fp, source="test:ohif").accepted
        uids[name] = uid
    return uids


class DicomwebLog:
    """Every DICOMweb response the page received, and when the first request left."""

    def __init__(self, page: Page) -> None:
        self.responses: list[tuple[int, str]] = []
        self.first_request: float | None = None
        page.on("request", self._request)
        page.on("response", self._response)

    def _request(self, request: Any) -> None:
        if "/dicomweb/" in request.url and self.first_request is None:
            self.first_request = time.monotonic()

    def _response(self, response: Response) -> None:
        if "/dicomweb/" in response.url:
            self.responses.append((response.status, response.url))

    def failures(self) -> list[tuple[int, str]]:
        return [(status, url) for status, url in self.responses if status >= 400]


def signed_in_viewer(browser: Browser, live_server,
                     cookies: list[dict[str, str]] | None = None,
                     username: str = "alice") -> Iterator[Page]:
    """alice, the clinic admin (or ``username``), signed in through the portal's login form
    at /viewer/."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    if cookies:
        context.add_cookies(cookies)  # type: ignore[arg-type]
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(f"{live_server.url}/viewer/")
    assert "/accounts/login/" in page.url
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("form.card button[type=submit]")
    page.wait_for_url(f"{live_server.url}/viewer/")
    yield page
    close_and_settle(context)


@pytest.fixture
def page(browser: Browser, live_server, alice, ohif_dist) -> Iterator[Page]:
    yield from signed_in_viewer(browser, live_server)


def _canvas_has_image(page: Page) -> bool:
    """True once a cornerstone viewport canvas shows more than one flat colour."""
    from PIL import Image

    for canvas in page.query_selector_all("canvas.cornerstone-canvas"):
        box = canvas.bounding_box()
        if not box or box["width"] < 32 or box["height"] < 32:
            continue
        image = Image.open(io.BytesIO(canvas.screenshot())).convert("L")
        low, high = cast(tuple[int, int], image.getextrema())
        if high - low > 40 and len(image.resize((64, 64)).getcolors(4096) or []) > 8:
            return True
    return False


def test_ohif_shows_a_study_from_the_archive(page: Page, live_server, studies, tmp_path,
                                             record_property):
    log = DicomwebLog(page)
    started = time.monotonic()
    page.goto(f"{live_server.url}/viewer/viewer?StudyInstanceUIDs={studies['current']}")

    deadline = started + FIRST_IMAGE_TIMEOUT_S
    while not _canvas_has_image(page):
        assert time.monotonic() < deadline, (
            f"no image after {FIRST_IMAGE_TIMEOUT_S}s; DICOMweb: {log.responses[-10:]}"
        )
        page.wait_for_timeout(100)
    first_image = time.monotonic()
    shot = tmp_path / "ohif-viewer.png"
    page.screenshot(path=str(shot))

    since_request = first_image - (log.first_request or started)
    record_property("ohif_first_image_s", round(first_image - started, 2))
    record_property("ohif_first_image_after_first_dicomweb_request_s", round(since_request, 2))
    print(f"\nOHIF first image {first_image - started:.2f} s after navigation, "
          f"{since_request:.2f} s after its first DICOMweb request; screenshot {shot}")

    page.wait_for_timeout(1500)  # let thumbnails and prefetch requests finish
    urls = [url for _, url in log.responses]
    assert any("/metadata" in url for url in urls), "OHIF read no series metadata"
    assert any("/frames/" in url for url in urls), "OHIF fetched no frame"
    assert any("includefield" in url for url in urls), "OHIF sent no QIDO with includefield"
    assert log.failures() == []


def test_ohif_study_list_shows_the_patient(page: Page, live_server, studies):
    log = DicomwebLog(page)
    page.goto(f"{live_server.url}/viewer/")
    page.get_by_text("Pereira", exact=False).first.wait_for()
    body = page.inner_text("body")
    assert "Pereira" in body
    assert "CT tórax current" in body and "CT tórax prior" in body
    assert log.responses, "the study list made no DICOMweb request"
    assert log.failures() == []


def test_the_viewer_needs_a_signed_in_user(client, ohif_dist, db):
    response = client.get("/viewer/viewer?StudyInstanceUIDs=1.2.3")
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]
    assert client.get("/viewer/app-config.js").status_code == 302


def test_the_config_points_ohif_at_this_servers_dicomweb(client, alice, ohif_dist, settings):
    settings.ALLOWED_HOSTS = ["portal.example.org", "testserver"]
    client.force_login(alice)
    config = client.get("/viewer/app-config.js", HTTP_HOST="portal.example.org")
    text = config.content.decode()
    assert config["Content-Type"].startswith("text/javascript")
    assert '"qidoRoot": "http://portal.example.org/dicomweb"' in text
    assert '"routerBasename": "/viewer"' in text
    assert '"useSharedArrayBuffer": "FALSE"' in text
    page = client.get("/viewer/viewer")
    html = page.content.decode()
    assert 'window.PUBLIC_URL="/viewer/"' in html
    assert 'src="/viewer/app-config.js"' in html
    assert 'src="/app' not in html and 'href="/assets' not in html


def test_ohif_bundles_load_their_chunks_from_under_viewer(client, ohif_dist):
    bundle = next(ohif_dist.glob("app.bundle.*.js"))
    response = client.get(f"/viewer/{bundle.name}")
    assert response.status_code == 200
    assert b'__webpack_require__.p = "/viewer/";' in response.content
    assert b'__webpack_require__.p = "/";' not in response.content
    outside = client.get("/viewer/../portal/settings.py")
    assert outside.status_code in (302, 404) and b"SECRET_KEY" not in outside.content
    assert client.get("/viewer/missing.bundle.js").status_code == 404
