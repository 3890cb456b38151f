"""The doctors' workspace in a real browser: dora, granted paula's record, on a phone and on
a desktop. Thumbnails load through her session, the pages fit a phone's width, the header
filters as she types, and "open side by side" puts the study and its prior in one OHIF
layout (both studies' metadata fetched, two viewports showing images)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import cast

import pytest
from django.urls import reverse
from playwright.sync_api import Browser, BrowserContext, Page

from tests import workspace_support
from tests.conftest import PASSWORD
from tests.test_ohif_viewer import DicomwebLog, ohif_dist  # noqa: F401 (a fixture)
from tests.test_patient_journey_browser import PHONE, no_horizontal_overflow

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# With live_server, pytest-django makes these tests' database transactional.
history_files = workspace_support.history_files
history = workspace_support.history
granted_dora = workspace_support.granted_dora

BOTH_STUDIES_TIMEOUT_S = 90


def _signed_in(browser: Browser, live_server, **options) -> Iterator[Page]:
    context: BrowserContext = browser.new_context(locale="en-US", **options)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", "dora")
    page.fill("input[name=password]", PASSWORD)
    page.click("form.card button[type=submit]")
    page.wait_for_load_state()
    yield page
    context.close()


@pytest.fixture
def on_phone(browser, live_server, granted_dora) -> Iterator[Page]:
    yield from _signed_in(browser, live_server, viewport=PHONE, is_mobile=True,
                          has_touch=True)


@pytest.fixture
def on_desktop(browser, live_server, granted_dora) -> Iterator[Page]:
    yield from _signed_in(browser, live_server, viewport={"width": 1280, "height": 900})


def _all_images_loaded(page: Page) -> None:
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('.ws-series img'))"
        ".every(i => i.complete && i.naturalWidth > 0)")


def test_on_a_phone_the_timeline_and_study_page_fit_and_show_their_thumbnails(
        on_phone: Page, live_server, history):
    page = on_phone
    page.goto(live_server.url + reverse("imaging:patient_timeline", args=[history.patient.pk]))
    assert page.locator(".ws-study").count() == 6
    assert page.locator(".ws-badge-prior").count() == 3
    page.locator(".ws-series img").last.scroll_into_view_if_needed()
    _all_images_loaded(page)
    assert no_horizontal_overflow(page)

    page.locator(".ws-current a.ws-title").click()
    page.wait_for_url(f"**/imaging/studies/{history.current.study_instance_uid}/")
    _all_images_loaded(page)
    assert page.locator(".ws-priors li").count() == 3
    assert no_horizontal_overflow(page)


def test_the_header_filters_as_one_types_and_opens_sequences_holding_a_match(
        on_phone: Page, live_server, history):
    page = on_phone
    page.goto(live_server.url + reverse("imaging:study_detail",
                                        args=[history.current.study_instance_uid]))
    page.locator("a[href*='/header/']").first.click()
    page.wait_for_url("**/header/")
    assert no_horizontal_overflow(page)
    rows = page.locator("#header tr[data-search]")
    total = rows.count()
    page.fill("[data-header-filter]", "patientname")
    visible = page.locator("#header tr[data-search]:not([hidden])")
    assert visible.count() == 1 and "(0010,0010)" in visible.first.inner_text()
    page.fill("[data-header-filter]", "nothing like this")
    assert page.locator("#header-none").is_visible()
    page.fill("[data-header-filter]", "")
    assert rows.locator("visible=true").count() == total


def test_open_side_by_side_loads_the_study_and_its_prior_in_one_layout(
        on_desktop: Page, live_server, history, ohif_dist):  # noqa: F811
    page = on_desktop
    current = history.current.study_instance_uid
    prior = history.studies["ct_chest_2025"].study_instance_uid
    page.goto(live_server.url + reverse("imaging:study_detail", args=[current]))
    log = DicomwebLog(page)
    page.locator("a.ws-compare").first.click()
    page.wait_for_url("**/viewer/viewer?**")
    assert "hangingProtocolId" in page.url

    deadline = time.monotonic() + BOTH_STUDIES_TIMEOUT_S
    while not (_metadata_of(log, current) and _metadata_of(log, prior)
               and _viewports_with_images(page) >= 2):
        assert time.monotonic() < deadline, f"DICOMweb: {log.responses[-10:]}"
        page.wait_for_timeout(200)
    assert log.failures() == []


def _metadata_of(log: DicomwebLog, study_uid: str) -> bool:
    return any(status == 200 and f"/studies/{study_uid}/" in url and "/metadata" in url
               for status, url in log.responses)


def _viewports_with_images(page: Page) -> int:
    import io

    from PIL import Image

    shown = 0
    for canvas in page.query_selector_all("canvas.cornerstone-canvas"):
        box = canvas.bounding_box()
        if not box or box["width"] < 32 or box["height"] < 32:
            continue
        image = Image.open(io.BytesIO(canvas.screenshot())).convert("L")
        low, high = cast(tuple[int, int], image.getextrema())
        if high - low > 40:
            shown += 1
    return shown
