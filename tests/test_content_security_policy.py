"""A Content-Security-Policy on every page; OHIF works under its own, looser one.

The portal's pages allow scripts only from the portal's static files, so a script that
got into a page (a stored name rendered unescaped somewhere) does not run. OHIF shares the
origin, so it gets its own policy on /viewer/ with only what it needs; headless Chromium
loads a study under it and must report no violation.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from playwright.sync_api import Browser, Page, Route
from pydicom.data import get_testdata_file

from imaging.ingest import ingest
from imaging.synthetic import SeriesSpec, write_study

from .conftest import PASSWORD, PAULA
from .test_ohif_viewer import _canvas_has_image, ohif_dist  # noqa: F401  (fixture)

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`);
});
"""


def _policy(header: str) -> dict[str, list[str]]:
    parts = (part.strip().split() for part in header.split(";") if part.strip())
    return {words[0]: words[1:] for words in parts}


def test_a_portal_page_allows_scripts_only_from_the_portal(client, alice):
    client.force_login(alice)
    policy = _policy(client.get("/imaging/")["Content-Security-Policy"])
    assert policy["script-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert "'unsafe-eval'" not in str(policy) and "'wasm-unsafe-eval'" not in str(policy)


def test_the_login_page_has_the_policy_too(client, db):
    assert "script-src 'self'" in client.get("/accounts/login/")["Content-Security-Policy"]


def test_the_viewer_page_allows_its_own_inline_scripts_by_nonce_only(
        client, alice, ohif_dist):  # noqa: F811  (the fixture imported above)
    client.force_login(alice)
    response = client.get("/viewer/viewer")
    policy = _policy(response["Content-Security-Policy"])
    nonces = [word for word in policy["script-src"] if word.startswith("'nonce-")]
    assert len(nonces) == 1
    nonce = nonces[0].removeprefix("'nonce-").removesuffix("'")
    html = response.content.decode()
    assert html.count(f'<script nonce="{nonce}">') == 2 and "<script>" not in html
    assert "'unsafe-inline'" not in policy["script-src"]
    assert policy["connect-src"] == ["'self'"] and policy["worker-src"] == ["'self'"]
    assert client.get("/viewer/viewer")["Content-Security-Policy"] != response[
        "Content-Security-Policy"]  # a fresh nonce each time


@pytest.fixture
def signed_in(browser: Browser, live_server, alice) -> Iterator[tuple[Page, list[str]]]:
    """alice signed in through the login form; the page and the CSP messages it logs."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    context.add_init_script(RECORD_VIOLATIONS)
    page = context.new_page()
    page.set_default_timeout(60_000)
    messages: list[str] = []
    page.on("console", lambda m: messages.append(m.text)
            if "Content Security Policy" in m.text or "Content-Security-Policy" in m.text
            else None)
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("form.card button[type=submit]")
    page.wait_for_url(f"{live_server.url}/imaging/")
    yield page, messages
    context.close()


@pytest.fixture(params=["uncompressed CT", "JPEG 2000 MR"])
def study(request, transactional_db, tmp_path: Path) -> str:
    """A study OHIF shows as stored: raw pixels, or JPEG 2000 its WebAssembly codec decodes."""
    if request.param == "uncompressed CT":
        uid, paths = write_study(tmp_path / "ct", PAULA, [SeriesSpec("CT", 6, size=256)],
                                 study_date=datetime.date(2026, 3, 2), accession="ACC-CSP-1",
                                 description="CT csp")
    else:
        compressed = Path(str(get_testdata_file("MR_small_jp2klossless.dcm")))
        uid, paths = str(pydicom.dcmread(compressed).StudyInstanceUID), [compressed]
    for path in paths:
        with path.open("rb") as fp:
            assert ingest(fp, source="test:csp").accepted
    return uid


@pytest.mark.browser
@pytest.mark.slow
def test_ohif_shows_a_study_under_its_policy_with_no_violation(signed_in, live_server, study,
                                                               ohif_dist):  # noqa: F811
    page, messages = signed_in
    page.goto(f"{live_server.url}/viewer/viewer?StudyInstanceUIDs={study}")
    deadline = time.monotonic() + 90
    while not _canvas_has_image(page):
        assert time.monotonic() < deadline, f"no image; CSP messages: {messages}"
        page.wait_for_timeout(100)
    page.wait_for_timeout(1500)  # thumbnails, prefetch, workers
    assert sorted(set(messages)) == []
    assert sorted(set(page.evaluate("window.__violations"))) == []
    with page.expect_response(lambda r: "/dicomweb/studies" in r.url):
        page.goto(f"{live_server.url}/viewer/")  # the study list
    page.wait_for_timeout(1500)
    assert sorted(set(messages)) == []
    assert sorted(set(page.evaluate("window.__violations"))) == []


@pytest.mark.browser
def test_a_script_injected_into_a_portal_page_does_not_run(signed_in, live_server):
    page, _messages = signed_in

    def inject(route: Route) -> None:
        response = route.fetch()  # the portal's real answer, its CSP header included
        body = response.text().replace(
            "</main>", "<script>window.__injected = true;</script></main>")
        route.fulfill(response=response, body=body)

    page.route(f"{live_server.url}/imaging/", inject)
    page.goto(f"{live_server.url}/imaging/")
    assert "</script>" in page.content() and "__injected" in page.content()
    assert page.evaluate("window.__injected === undefined")
    violations: Any = page.evaluate("window.__violations")
    assert any(v.startswith("script-src") and "inline" in v for v in violations), violations


@pytest.mark.browser
def test_the_language_menu_still_works_without_inline_handlers(signed_in, live_server):
    page, messages = signed_in
    page.select_option("select[name=language]", "es")
    page.wait_for_load_state()
    page.wait_for_function("document.documentElement.lang === 'es'")
    assert page.evaluate("window.__violations") == [] and messages == []


@pytest.mark.browser
@pytest.mark.parametrize("path", ["/imaging/", "/imaging/upload/", "/accounts/tokens/",
                                  "/sharing/", "/admin/", "/admin/accounts/user/",
                                  "/admin/accounts/user/add/"])
def test_portal_and_admin_pages_work_under_the_policy(signed_in, live_server, path):
    page, messages = signed_in
    response = page.goto(f"{live_server.url}{path}")
    assert response is not None and response.status == 200
    page.wait_for_timeout(300)
    assert page.evaluate("window.__violations") == [] and messages == []
