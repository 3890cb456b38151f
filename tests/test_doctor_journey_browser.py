"""A doctor's whole reading session in a real browser, in Portuguese, from sign-in to the
report her patient reads.

dora (a doctor with a grant to paula, TOTP on as in production) signs in with her password
and her authenticator's code, finds paula on the worklist by typing her name without the
accent or capitals, opens paula's timeline (last year's CT marked as the relevant prior,
"1 ano antes"), the study's page, and the study with that prior side by side in OHIF, where
both viewports draw an image. She measures a length, saves it as a DICOM SR (OHIF's
"Create SR", a STOW-RS into the archive), reloads and finds the measurement again; then she
writes the report and signs it. paula, signed in to the patient portal, sees "Laudo
disponível" and reads it.
"""

from __future__ import annotations

import datetime
import os
import re
import time
from pathlib import Path

import pytest
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice
from playwright.sync_api import Browser, Page

from accounts.models import AccessGrant, User
from imaging.ingest import ingest
from imaging.models import Instance, Patient, ReportStatus, Study
from imaging.synthetic import SeriesSpec, write_study

from .conftest import PASSWORD, PAULA, story_clinic
from .encoded_ct import write_ct_study
from .ohif_support import (
    NO_TOUR,
    SR_CLASSES,
    drag,
    drawn_panes,
    measurement_panel,
    pick_tool,
    showing,
)
from .test_ohif_viewer import DicomwebLog, ohif_dist  # noqa: F401  (fixture)

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.two_factor]

CURRENT_SERIES = "Tórax atual"
PRIOR_SERIES = "Tórax anterior"
DRAWN_TIMEOUT_S = 90


@pytest.fixture
def paulas_history(transactional_db, tmp_path: Path, paula, charlies_record
                   ) -> dict[str, str]:
    """paula's CT of today (CT rescale, for OHIF's HU) and her chest CT of a year before,
    at dora's clinic; charlie's MR is in the archive too, not dora's to see."""
    current, current_paths = write_ct_study(tmp_path / "current", PAULA, slices=4,
                                            description=CURRENT_SERIES,
                                            accession="ACC-JOURNEY")
    prior, prior_paths = write_study(
        tmp_path / "prior", PAULA, [SeriesSpec("CT", 4, size=192, description=PRIOR_SERIES)],
        study_date=datetime.date(2025, 3, 1), accession="ACC-JOURNEY-PRIOR",
        description="CT tórax", seed=29)
    for path in [*current_paths, *prior_paths]:
        with path.open("rb") as fp:
            assert ingest(fp, source="test:doctor-journey").accepted
    Patient.objects.filter(patient_id=PAULA.patient_id).update(clinic=story_clinic(),
                                                               user=paula)
    return {"current": current, "prior": prior}


@pytest.fixture
def dora_on_duty(dora: User, paulas_history) -> tuple[User, TOTPDevice]:
    AccessGrant.objects.create(doctor=dora, clinic=story_clinic(),
                               patient=Patient.objects.get(patient_id=PAULA.patient_id))
    return dora, TOTPDevice.objects.create(user=dora, name="celular", confirmed=True)


def _code(device: TOTPDevice) -> str:
    device.refresh_from_db()
    return f"{totp(device.bin_key, device.step, device.t0, device.digits, device.drift):06d}"


def _both_drawn(page: Page, log: DicomwebLog) -> None:
    deadline = time.monotonic() + DRAWN_TIMEOUT_S
    while True:
        panes = drawn_panes(page)
        current, prior = showing(panes, CURRENT_SERIES), showing(panes, PRIOR_SERIES)
        if current and prior:
            assert current.x < prior.x and current.picture != prior.picture
            return
        assert time.monotonic() < deadline, (
            f"not both drawn: {[p.text for p in panes]}; DICOMweb: {log.responses[-10:]}")
        page.wait_for_timeout(200)


def test_a_doctor_reads_compares_measures_and_reports_and_the_patient_reads_it(
        browser: Browser, live_server, settings, dora_on_duty, paula, ohif_dist,  # noqa: F811
        paulas_history, tmp_path):
    settings.REQUIRE_2FA = True
    _dora, device = dora_on_duty
    base = live_server.url
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="pt-BR")
    context.add_init_script(NO_TOUR)
    context.set_default_timeout(60_000)
    page = context.new_page()

    # Sign in: password, then the authenticator's code; the doctor lands on the worklist.
    page.goto(f"{base}/accounts/login/")
    page.fill("input[name=username]", "dora")
    page.fill("input[name=password]", PASSWORD)
    page.click("form.card button[type=submit]")
    page.wait_for_url("**/accounts/2fa/**")
    page.fill("input[name=token]", _code(device))
    page.click("form.card button[type=submit]")
    page.wait_for_url(f"{base}/imaging/")

    # The worklist: "pereira" finds Pereira^Paula's two studies, and nothing of charlie.
    page.fill("input[name=q]", "pereira")
    page.click("form.worklist-filters button[type=submit]")
    page.wait_for_url("**/imaging/?*q=pereira*")
    rows = page.locator("table.list tbody tr")
    assert rows.count() == 2
    assert "CHARLIE" not in page.content() and "RM crânio" not in page.content()

    # The timeline: newest first, last year's chest CT marked as the relevant prior.
    rows.first.locator("td.patient a").click()
    page.wait_for_url("**/imaging/patients/*/")
    timeline = page.inner_text("main")
    assert "anterior relevante" in timeline and "1 ano antes" in timeline, timeline
    assert timeline.index(CURRENT_SERIES) < timeline.index(PRIOR_SERIES)

    # The study page, then the study and its prior side by side in OHIF.
    page.click(f"a[href$='/imaging/studies/{paulas_history['current']}/']")
    page.wait_for_url(f"**/imaging/studies/{paulas_history['current']}/")
    assert "Laudo" in page.inner_text("main")
    log = DicomwebLog(page)
    page.locator("a", has_text="Abrir lado a lado").first.click()
    page.wait_for_url("**/viewer/viewer?*")
    _both_drawn(page, log)
    page.screenshot(path=str(tmp_path / "lado-a-lado.png"))

    # A length measured on today's CT and saved as an SR into the archive.
    page.goto(f"{base}/viewer/viewer?StudyInstanceUIDs={paulas_history['current']}")
    page.wait_for_selector("canvas.cornerstone-canvas")
    page.wait_for_function("() => document.querySelector('canvas.cornerstone-canvas')"
                           ".getContext('2d') !== null")
    page.wait_for_timeout(1000)
    box = page.locator("canvas.cornerstone-canvas").first.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.click("[data-cy=trackedMeasurements-btn]")
    pick_tool(page, "Length")
    drag(page, (x - 100, y), (x + 100, y))
    page.click("[data-cy=prompt-begin-tracking-yes-btn]")
    panel = page.locator("[data-cy=trackedMeasurements-panel]")
    panel.get_by_text(re.compile(r"\d+(\.\d+)? mm")).first.wait_for()
    # The panel follows the drag; under load its first figure can be one from mid-drag.
    measured = measurement_panel(page)
    length = re.search(r"(\d+(?:\.\d+)?) mm\b", measured)
    assert length, measured
    with page.expect_response(lambda r: r.request.method == "POST"
                              and r.url.endswith("/dicomweb/studies")) as stored:
        page.get_by_role("button", name=re.compile("Create SR|Criar SR|Criar relatório")
                         ).click()
        page.fill("[data-cy=dialog-input]", "Medidas")
        page.click("[data-cy=input-dialog-save-button] button")
    assert stored.value.status == 200
    assert Instance.objects.filter(series__study__study_instance_uid=paulas_history["current"],
                                   sop_class_uid__in=SR_CLASSES).count() == 1
    page.reload()
    page.wait_for_selector("canvas.cornerstone-canvas")
    page.locator("[data-cy=study-browser-thumbnail-no-image]", has_text="Medidas").dblclick()
    page.click("[data-cy=yes-hydrate-btn]")
    page.click("[data-cy=trackedMeasurements-btn]")
    panel.get_by_text(f"{length.group(1)} mm").first.wait_for()

    # The report, written and signed on the portal.
    page.goto(f"{base}/imaging/studies/{paulas_history['current']}/")
    page.locator("a[href*='/reports/studies/']").first.click()
    page.fill("textarea[name=findings]", "Nódulo de 4 mm no lobo superior direito, estável.")
    page.fill("textarea[name=impression]", "Sem alterações em relação ao exame anterior.")
    page.click("button[name=action][value=finalize]")
    page.wait_for_load_state()
    assert "Dora Lima" in page.inner_text("main") and "CRM-RS 12345" in page.inner_text("main")
    assert Study.objects.get(study_instance_uid=paulas_history["current"]).report_status == \
        ReportStatus.FINAL
    context.close()

    # paula, on the patient portal: "Laudo disponível", and the report's text.
    settings.REQUIRE_2FA = False  # paula has no second factor yet
    patient = browser.new_context(viewport={"width": 390, "height": 844}, locale="pt-BR",
                                  is_mobile=True)
    mine = patient.new_page()
    mine.goto(f"{base}/accounts/login/?next=/patient/exams/")
    mine.fill("input[name=username]", "paula")
    mine.fill("input[name=password]", PASSWORD)
    mine.click("form.card button[type=submit]")
    mine.wait_for_url(f"{base}/patient/exams/")
    available = mine.locator("a.report-available")
    assert available.count() == 1 and available.inner_text().strip() == "Laudo disponível"
    available.click()
    mine.wait_for_url("**/report/")
    assert "Nódulo de 4 mm" in mine.inner_text("main")
    pdf = mine.request.get(f"{base}/patient/exams/{paulas_history['current']}/report.pdf")
    assert pdf.status == 200 and pdf.body().startswith(b"%PDF")
    patient.close()
