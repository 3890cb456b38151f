"""A patient's whole journey in a real browser, on a phone: from the code on the exam
receipt to a downloaded ZIP that works like the clinic's CD.

Headless Chromium types paula's receipt code and birth date, opens her exam and sees a
rendered image, makes a download link with a PIN, opens it, types the PIN and downloads the
ZIP (through the page's own request context: browser downloads do not work here). The ZIP
holds every instance byte for byte, with a DICOMDIR that pydicom and DCMTK read. A wrong
PIN, an expired and a revoked link get clear pages, and charlie, signed in with his own
code, never reaches paula's exam.
"""

from __future__ import annotations

import datetime
import io
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize
from pydicom.fileset import FileSet

from audit.trail import Actor
from imaging import blobs
from imaging.ingest import ingest
from imaging.models import Instance, Patient, Study
from patients import codes
from sharing import services
from sharing.models import DownloadLink

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PHONE: ViewportSize = {"width": 390, "height": 844}
PIN = "2468"






@pytest.fixture
def archive(transactional_db, ct_study, other_study) -> tuple[Study, Study]:
    for path in [*ct_study[1], *other_study[1]]:
        with path.open("rb") as fp:
            assert ingest(fp, source="test").accepted
    return (Study.objects.get(study_instance_uid=ct_study[0]),
            Study.objects.get(study_instance_uid=other_study[0]))


def phone(browser: Browser) -> BrowserContext:
    context = browser.new_context(viewport=PHONE, locale="pt-BR", is_mobile=True,
                                  has_touch=True)
    context.set_default_timeout(30_000)
    return context


def no_horizontal_overflow(page: Page) -> bool:
    return bool(page.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth"))


def sign_in_with_code(page: Page, base: str, code: str, birth_date: str) -> None:
    page.goto(f"{base}/patient/")
    assert no_horizontal_overflow(page)
    page.fill("input[name=code]", code)
    page.fill("input[name=birth_date]", birth_date)
    page.click("#code-form button[type=submit]")
    page.wait_for_url(f"{base}/patient/exams/")


def test_paula_goes_from_her_receipt_code_to_a_downloaded_zip(browser, live_server, tina,
                                                              archive, tmp_path):
    paulas_study, _charlies_study = archive
    base = live_server.url
    paula_record = Patient.objects.get(patient_id="PAULA-001")
    _access, code = codes.issue_code(paula_record, tina)

    context = phone(browser)
    page = context.new_page()
    sign_in_with_code(page, base, code, "1975-04-12")

    # Her exams, and only hers.
    exams = page.locator("#exams li.pp-exam")
    assert exams.count() == 1
    assert exams.first.get_attribute("data-uid") == paulas_study.study_instance_uid
    assert "CT tórax" in exams.first.inner_text()
    assert "RM crânio" not in page.content()
    assert no_horizontal_overflow(page)

    # The exam's images, rendered by the portal.
    exams.first.locator("h2 a").click()
    page.wait_for_url(f"{base}/patient/exams/{paulas_study.study_instance_uid}/")
    page.wait_for_function(
        "() => { const i = document.getElementById('frame');"
        " return i.complete && i.naturalWidth > 0; }")
    assert page.locator(".pp-thumb").count() == 2
    first = page.locator("#frame").get_attribute("src")
    page.click("#next")
    page.wait_for_function(
        "(first) => { const i = document.getElementById('frame');"
        " return i.getAttribute('src') !== first && i.complete && i.naturalWidth > 0; }",
        arg=first)
    assert page.locator("#position").inner_text().startswith("2 / 6")
    page.select_option("#preset", "lung")
    page.wait_for_function(
        "() => { const i = document.getElementById('frame');"
        " return i.src.includes('preset=lung') && i.complete && i.naturalWidth > 0; }")
    assert no_horizontal_overflow(page)

    # A download link with a PIN, made on the sharing page.
    page.click(".pp-actions a[href*='/sharing/links/new/']")
    page.wait_for_url("**/sharing/links/new/**")
    page.fill("input[name=pin]", PIN)
    page.click("form.card button[type=submit]")
    page.wait_for_selector("code")
    link_url = page.locator("code").inner_text().strip()
    assert link_url.startswith(f"{base}/s/")
    assert no_horizontal_overflow(page)

    # Opened as whoever receives it: the PIN, then the ZIP.
    receiver = phone(browser)
    other = receiver.new_page()
    other.goto(link_url)
    other.fill("input[name=pin]", PIN)
    other.click("form.card button[type=submit]")
    download = other.locator("a[href$='/download']")
    download.wait_for()
    assert no_horizontal_overflow(other)
    response = other.request.get(f"{base}{download.get_attribute('href')}")
    assert response.status == 200
    assert response.headers["content-type"] == "application/zip"
    data = response.body()
    receiver.close()

    zipped = zipfile.ZipFile(io.BytesIO(data))
    assert zipped.testzip() is None
    zipped.extractall(tmp_path / "cd")
    instances = {i.sop_instance_uid: i for i in
                 Instance.objects.filter(series__study=paulas_study)}
    assert len(instances) == 12
    fileset = FileSet(tmp_path / "cd" / "DICOMDIR")
    assert len(fileset) == len(instances)
    for record in fileset:
        stored = instances.pop(record.SOPInstanceUID)
        assert Path(record.path).read_bytes() == b"".join(blobs.iter_chunks(stored.blob_key))
    assert instances == {}
    originals = {p.read_bytes() for p in _paths_of(paulas_study)}
    on_media = {Path(r.path).read_bytes() for r in fileset}
    assert on_media == originals  # the files the clinic sent, byte for byte
    if shutil.which("dcmdump"):
        dump = subprocess.run(["dcmdump", str(tmp_path / "cd" / "DICOMDIR")],
                              capture_output=True, text=True, timeout=60)
        assert dump.returncode == 0, dump.stderr
        assert dump.stdout.count("IMAGE") >= 12
    else:
        pytest.fail("dcmdump (DCMTK) is needed to check the DICOMDIR")

    context.close()


_PATHS: dict[str, list[Path]] = {}


@pytest.fixture(autouse=True)
def _remember_paths(ct_study, other_study) -> None:
    _PATHS[ct_study[0]] = ct_study[1]
    _PATHS[other_study[0]] = other_study[1]


def _paths_of(study: Study) -> list[Path]:
    return _PATHS[study.study_instance_uid]


def _link(study: Study, **kwargs: object) -> tuple[DownloadLink, str]:
    user = study.patient.user
    assert user is not None
    return services.create_download_link(user, [study], actor=Actor.for_user(user),
                                         **kwargs)  # type: ignore[arg-type]


def test_wrong_pin_expired_and_revoked_links_get_clear_pages(browser, live_server, tina,
                                                            archive):
    paulas_study, _ = archive
    base = live_server.url
    patient = Patient.objects.get(patient_id="PAULA-001")
    _access, code = codes.issue_code(patient, tina)
    context = phone(browser)
    page = context.new_page()
    sign_in_with_code(page, base, code, "1975-04-12")  # gives paula her account
    paulas_study = Study.objects.select_related("patient__user").get(pk=paulas_study.pk)
    patient = paulas_study.patient

    _pinned, token = _link(paulas_study, pin=PIN)
    page.goto(f"{base}/s/{token}")
    page.fill("input[name=pin]", "1111")
    page.click("form.card button[type=submit]")
    page.wait_for_selector("p.error[role=alert]")
    assert "PIN" in page.locator("p.error").inner_text()
    assert page.locator("a[href$='/download']").count() == 0
    assert page.request.get(f"{base}/s/{token}/download", max_redirects=0).status == 302

    expired, token = _link(paulas_study)
    DownloadLink.objects.filter(pk=expired.pk).update(expires=timezone.now()
                                                      - datetime.timedelta(minutes=1))
    response = page.goto(f"{base}/s/{token}")
    assert response is not None and response.status == 410
    assert "expirou" in page.locator("h1").inner_text().lower()
    assert page.request.get(f"{base}/s/{token}/download").status == 410

    revoked, token = _link(paulas_study)
    assert patient.user is not None
    services.revoke_link(patient.user, revoked, Actor.system("test"))
    response = page.goto(f"{base}/s/{token}")
    assert response is not None and response.status == 410
    assert "cancelado" in page.locator("h1").inner_text().lower()
    assert no_horizontal_overflow(page)
    context.close()


def test_charlie_with_his_own_code_never_reaches_paulas_exam(browser, live_server, tina,
                                                             archive):
    paulas_study, charlies_study = archive
    base = live_server.url
    _access, code = codes.issue_code(Patient.objects.get(patient_id="CHARLIE-002"), tina)
    context = phone(browser)
    page = context.new_page()
    sign_in_with_code(page, base, code, "1990-09-30")
    uids = [li.get_attribute("data-uid") for li in page.locator("#exams li.pp-exam").all()]
    assert uids == [charlies_study.study_instance_uid]

    response = page.goto(f"{base}/patient/exams/{paulas_study.study_instance_uid}/")
    assert response is not None and response.status == 404
    instance = Instance.objects.filter(series__study=paulas_study).first()
    assert instance is not None
    image = page.request.get(f"{base}/patient/exams/{paulas_study.study_instance_uid}"
                             f"/images/{instance.sop_instance_uid}/0.jpg")
    assert image.status == 404
    share = page.request.get(f"{base}/sharing/links/new/?study="
                             f"{paulas_study.study_instance_uid}")
    assert share.status == 404
    context.close()


def test_a_wrong_birth_date_in_the_browser_is_refused_without_saying_which(
        browser, live_server, tina, archive):
    base = live_server.url
    _access, code = codes.issue_code(Patient.objects.get(patient_id="PAULA-001"), tina)
    context = phone(browser)
    page = context.new_page()
    page.goto(f"{base}/patient/")
    page.fill("input[name=code]", code)
    page.fill("input[name=birth_date]", "1975-04-13")
    page.click("#code-form button[type=submit]")
    alert = page.locator("#refusal")
    alert.wait_for()
    assert alert.get_attribute("data-reason") == "wrong"
    assert page.url == f"{base}/patient/"
    assert no_horizontal_overflow(page)
    context.close()
