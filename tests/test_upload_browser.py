"""The upload page in a real browser: files, a folder and a drop, each with its result.

Headless Chromium signs in as tina through the login form and uses the page as a person
would; the live server runs the real views against the test database.
"""

from __future__ import annotations

import base64
import datetime
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from imaging.models import Instance
from imaging.synthetic import PatientSpec, SeriesSpec, write_study

from .conftest import PASSWORD

# Playwright's sync API runs an event loop in this thread; the ORM calls in these tests
# are still plain synchronous calls.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

pytestmark = [pytest.mark.browser, pytest.mark.slow]

STORED = "armazenado"
DUPLICATE = "já está no acervo"




@pytest.fixture
def page(browser: Browser, live_server, tina) -> Iterator[Page]:
    """tina, signed in through the login form, on the upload page."""
    # A phone, set up in Brazilian Portuguese like the clinic's own.
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="pt-BR")
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(f"{live_server.url}/imaging/upload/")
    assert "/accounts/login/" in page.url
    page.fill("input[name=username]", "tina")
    page.fill("input[name=password]", PASSWORD)
    page.click("form.card button[type=submit]")
    page.wait_for_url(f"{live_server.url}/imaging/upload/")
    yield page
    context.close()


def _results(page: Page, count: int) -> list[tuple[str, str, str]]:
    """Wait until the bar is full and ``count`` files have a result; (outcome, name, text)."""
    page.wait_for_function(
        """(count) => {
            const lines = document.querySelectorAll('#results li:not(.pending)');
            return document.getElementById('progress').value === 100
                && !document.querySelector('#results li.pending')
                && lines.length === count;
        }""",
        arg=count,
    )
    return [
        (li.get_attribute("data-outcome") or "", li.inner_text().split("\n")[0],
         li.inner_text())
        for li in page.query_selector_all("#results li")
    ]


def _names(lines: list[tuple[str, str, str]]) -> set[str]:
    return {name for _, name, _ in lines}


def test_tina_uploads_files_then_a_folder_and_sees_each_result(page: Page, ct_study,
                                                                other_study):
    _, ct_paths = ct_study
    page.set_input_files("#files", [str(p) for p in ct_paths])
    lines = _results(page, len(ct_paths))
    assert {outcome for outcome, _, _ in lines} == {"stored"}
    assert all(STORED in text for _, _, text in lines)
    assert _names(lines) == {p.name for p in ct_paths}
    assert page.inner_text("#summary").startswith(f"{len(ct_paths)} de {len(ct_paths)}")
    assert Instance.objects.count() == len(ct_paths)

    # The same files again, this time as the folder they are in.
    page.reload()
    folder = ct_paths[0].parent
    page.set_input_files("#folder", str(folder))
    lines = _results(page, len(ct_paths))
    assert {outcome for outcome, _, _ in lines} == {"duplicate"}
    assert all(DUPLICATE in text for _, _, text in lines)
    assert _names(lines) == {f"{folder.name}/{p.name}" for p in ct_paths}

    # A folder of another study is stored.
    page.reload()
    _, mr_paths = other_study
    page.set_input_files("#folder", str(mr_paths[0].parent))
    lines = _results(page, len(mr_paths))
    assert {outcome for outcome, _, _ in lines} == {"stored"}
    assert Instance.objects.count() == len(ct_paths) + len(mr_paths)
    stored_uids = set(Instance.objects.values_list("sop_instance_uid", flat=True))
    assert {p.stem for p in [*ct_paths, *mr_paths]} == stored_uids


def _drop(page: Page, files: list[tuple[str, bytes]]) -> None:
    """Drop files on the drop zone as a browser would after a drag from the desktop."""
    page.evaluate(
        """(files) => {
            const data = new DataTransfer();
            for (const [name, b64] of files) {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                data.items.add(new File([bytes], name, { type: 'application/dicom' }));
            }
            const zone = document.querySelector('.dropzone');
            for (const type of ['dragenter', 'dragover', 'drop']) {
                zone.dispatchEvent(new DragEvent(type, {
                    bubbles: true, cancelable: true, dataTransfer: data,
                }));
            }
        }""",
        [[name, base64.b64encode(content).decode()] for name, content in files],
    )


def test_files_dropped_on_the_page_are_uploaded_and_names_are_shown_as_text(
    page: Page, tmp_path: Path
):
    _, paths = write_study(
        tmp_path / "drop", PatientSpec("DROP-1", "Souza^Davi", datetime.date(2001, 1, 2), "M"),
        [SeriesSpec("CT", 2, size=32)], study_date=datetime.date(2026, 1, 5),
        accession="ACC-DROP", description="TC abdome",
    )
    hostile = '<img src=x onerror="document.body.dataset.pwned=1">.dcm'
    _drop(page, [(paths[0].name, paths[0].read_bytes()), (hostile, b"not dicom"),
                 (paths[1].name, paths[1].read_bytes())])
    lines = _results(page, 3)
    outcomes = {name: outcome for outcome, name, _ in lines}
    assert outcomes == {paths[0].name: "stored", paths[1].name: "stored", hostile: "rejected"}
    assert page.query_selector("#results img") is None
    assert page.evaluate("document.body.dataset.pwned") is None
    rejected = next(text for outcome, _, text in lines if outcome == "rejected")
    assert "rejeitado" in rejected and "not a DICOM file" in rejected
    assert Instance.objects.filter(series__study__accession_number="ACC-DROP").count() == 2

    # Dropping one of them again says it is already there.
    page.reload()
    _drop(page, [(paths[0].name, paths[0].read_bytes())])
    [(outcome, _, text)] = _results(page, 1)
    assert outcome == "duplicate" and DUPLICATE in text


def test_a_zip_chosen_in_the_browser_gives_a_line_per_member(page: Page, ct_study,
                                                             tmp_path: Path):
    import zipfile

    _, paths = ct_study
    archive = tmp_path / "exame.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in paths[:3]:
            zf.write(path, path.name)
    page.set_input_files("#files", str(archive))
    lines = _results(page, 3)
    assert _names(lines) == {f"exame.zip!{p.name}" for p in paths[:3]}
    assert {outcome for outcome, _, _ in lines} == {"stored"}


def test_the_page_fits_a_phone_screen(page: Page):
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    overflowing = page.evaluate(
        """() => {
            const zone = document.querySelector('.dropzone').getBoundingClientRect();
            return Array.from(document.querySelectorAll('.dropzone input[type=file]'))
                .map((el) => el.getBoundingClientRect())
                .filter((box) => box.left < zone.left || box.right > zone.right).length;
        }"""
    )
    assert overflowing == 0


def test_the_language_switcher_changes_the_page_language(page: Page):
    assert page.inner_text("h1") == "Enviar imagens"
    with page.expect_navigation():
        page.select_option("select[name=language]", "es")
    assert page.inner_text("h1") == "Subir imágenes"
    assert page.get_attribute("html", "lang") == "es"
    with page.expect_navigation():
        page.select_option("select[name=language]", "en")
    assert page.inner_text("h1") == "Upload images"


def test_files_over_the_request_limit_show_why_and_are_not_stored(page: Page, ct_study,
                                                                  settings, tmp_path: Path):
    """One file over ``UPLOAD_MAX_REQUEST_BYTES`` is refused by the page without being sent;
    one whose request is just over it (the form adds a few hundred bytes) is refused by the
    server with 413, and the page shows the server's reason."""
    _, paths = ct_study
    settings.UPLOAD_MAX_REQUEST_BYTES = paths[0].stat().st_size
    page.reload()
    padded = tmp_path / "padded.dcm"
    padded.write_bytes(paths[1].read_bytes() + b"\0" * 64)
    page.set_input_files("#files", [str(padded), str(paths[0])])
    lines = _results(page, 2)
    assert {outcome for outcome, _, _ in lines} == {"failed"}
    texts = {name: text for _, name, text in lines}
    assert "UPLOAD_MAX_REQUEST_BYTES" in texts["padded.dcm"]
    assert "HTTP 413" not in texts["padded.dcm"]  # never sent
    assert "HTTP 413" in texts[paths[0].name] and "UPLOAD_MAX_REQUEST_BYTES" in texts[
        paths[0].name]
    assert not Instance.objects.exists()
