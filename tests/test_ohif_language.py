"""OHIF speaks the portal's language: the viewer page hands OHIF the user's language
(pt-BR, es or en) through the cookie OHIF's language detector reads first after ``?lng=``."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from django.conf import settings
from playwright.sync_api import Browser, Page

from .test_ohif_viewer import ohif_dist, signed_in_viewer, studies  # noqa: F401  (fixtures)

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _signed_in(browser: Browser, live_server, language: str) -> Iterator[Page]:
    yield from signed_in_viewer(browser, live_server, [{
        "name": settings.LANGUAGE_COOKIE_NAME, "value": language, "url": live_server.url}])


def _texts(page: Page) -> str:
    """What a person reads or hovers: the text, and titles, labels and placeholders."""
    return str(page.evaluate("""() => document.body.innerText + '\\n' +
        [...document.querySelectorAll('[title],[aria-label],[placeholder],[data-tooltip]')]
          .map(e => [e.title, e.getAttribute('aria-label'), e.placeholder,
                     e.getAttribute('data-tooltip')].filter(Boolean).join('\\n')).join('\\n')"""))


# Toolbar labels from OHIF's own locale files (platform/i18n/src/locales/*/Buttons.json):
# "Pan" and "Crosshairs" are "Arrastar" and "Localizador" in pt-BR, "Mover" and "Punto de
# mira" in es. OHIF 3.13's new study list has no translated strings yet; its toolbar does.
TOOLBAR = {
    "pt-br": ("Arrastar", "Localizador"),
    "es": ("Mover", "Punto de mira"),
    "en": ("Pan", "Crosshairs"),
}


def _wait_for_texts(page: Page, wanted: tuple[str, ...], seconds: float = 60) -> str:
    texts = ""
    for _ in range(int(seconds * 4)):
        texts = _texts(page)
        if all(word in texts.splitlines() for word in wanted):
            return texts
        page.wait_for_timeout(250)
    return texts


@pytest.mark.parametrize("language", ["pt-br", "es", "en"])
def test_ohifs_toolbar_speaks_the_portals_language(
        browser, live_server, alice, ohif_dist, studies, language):  # noqa: F811
    for page in _signed_in(browser, live_server, language):
        page.goto(f"{live_server.url}/viewer/viewer?StudyInstanceUIDs={studies['current']}")
        texts = _wait_for_texts(page, TOOLBAR[language]).splitlines()
        assert all(word in texts for word in TOOLBAR[language]), texts
        if language != "en":
            assert "Pan" not in texts and "Crosshairs" not in texts


def test_the_portals_language_wins_over_the_one_ohif_saved(
        browser, live_server, alice, ohif_dist, studies):  # noqa: F811
    """Someone who once used OHIF in English and now reads the portal in Spanish."""
    for page in _signed_in(browser, live_server, "es"):
        page.evaluate("localStorage.setItem('i18nextLng', 'en-US')")
        page.context.add_cookies([{"name": "i18next", "value": "en-US",
                                   "url": live_server.url}])
        page.goto(f"{live_server.url}/viewer/viewer?StudyInstanceUIDs={studies['current']}")
        texts = _wait_for_texts(page, TOOLBAR["es"]).splitlines()
        assert all(word in texts for word in TOOLBAR["es"]), texts


def test_the_viewer_page_hands_ohif_the_users_language(client, alice, ohif_dist):  # noqa: F811
    client.force_login(alice)
    for portal, expected in [("pt-br", "pt-BR"), ("es", "es"), ("en", "en-US")]:
        client.cookies[settings.LANGUAGE_COOKIE_NAME] = portal
        response = client.get("/viewer/")
        cookie = response.cookies["i18next"]
        assert cookie.value == expected
        assert cookie["path"] == "/viewer/"
