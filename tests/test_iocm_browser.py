"""Rejecting a wrong series from the study page in a real browser, in Portuguese: the
clinic's admin signs in, ticks the series, picks the reason and sees it gone."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page

from accounts.models import Role
from imaging.models import Rejection, Study
from tests.conftest import PASSWORD, _user, story_clinic

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def ana(transactional_db):
    user = _user("ana", Role.ADMIN, is_staff=True)
    user.clinics.add(story_clinic())
    return user


@pytest.fixture
def page(browser: Browser, live_server, ana, paulas_study) -> Iterator[Page]:
    context = browser.new_context(locale="pt-BR")
    page = context.new_page()
    page.set_default_timeout(30_000)
    url = f"{live_server.url}/imaging/studies/{paulas_study.study_instance_uid}/"
    page.goto(url)
    page.fill("input[name=username]", "ana")
    page.fill("input[name=password]", PASSWORD)
    page.click("form.card button[type=submit]")
    page.wait_for_url(url)
    yield page
    context.close()


def test_ana_rejects_a_series_for_patient_safety_and_it_is_gone(page: Page, paulas_study):
    first = paulas_study.series.order_by("series_number", "pk").first()
    assert page.locator("#reject-title").inner_text() == "Rejeitar imagens"
    page.check(f"#reject-form input[value='{first.series_instance_uid}']")
    page.select_option("#reject-reason", "113037")
    page.click("#reject-form button[type=submit]")
    page.wait_for_selector("#messages")
    assert "6 imagens rejeitadas: Rejeitada por segurança do paciente." in page.inner_text(
        "#messages")
    assert page.locator(".ws-series > li").count() == 1
    assert Rejection.objects.get().code_value == "113037"
    assert Study.objects.get(pk=paulas_study.pk).num_instances == 6
