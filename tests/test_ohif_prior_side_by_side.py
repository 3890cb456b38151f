"""A doctor opens a study with its prior side by side in OHIF: the current study on the
left, the prior of a year before on the right, each viewport drawing its own study.

The URL is the one the portal links to (``viewer.ohif.study_query`` with a prior, OHIF's
``@ohif/hpCompare`` protocol). dora, a doctor with a grant to paula, signs in through the
portal's login form; headless Chromium opens the compare URL and the test reads from the
page what a person would see: two viewports in one row, each canvas showing an image (not
a flat colour), the left one labelled with the current study's series, the right one with
the prior's, and the two pictures different.
"""

from __future__ import annotations

import datetime
import os
import time
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from playwright.sync_api import Browser, Page

from accounts.models import AccessGrant, User
from imaging.ingest import ingest
from imaging.models import Patient
from imaging.synthetic import SeriesSpec, write_study
from viewer.ohif import COMPARE_PROTOCOL, study_query

from .conftest import PAULA, story_clinic
from .ohif_support import drawn_panes, showing
from .test_ohif_viewer import DicomwebLog, ohif_dist, signed_in_viewer  # noqa: F401  (fixture)

# Playwright's sync API runs an event loop in this thread; the ORM calls are synchronous.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DRAWN_TIMEOUT_S = 90
CURRENT_SERIES = "Axial atual"
PRIOR_SERIES = "Axial anterior"


@pytest.fixture
def studies(transactional_db, tmp_path: Path) -> dict[str, str]:
    """paula's current CT and her CT of a year before (different slices and noise, so the
    pictures differ), both with two series, at dora's clinic."""
    uids = {}
    for name, date, seed, series in [
        ("current", datetime.date(2026, 3, 2), 11,
         [SeriesSpec("CT", 10, size=256, description=CURRENT_SERIES),
          SeriesSpec("CT", 3, size=256, description="Scout atual")]),
        ("prior", datetime.date(2025, 3, 1), 29,
         [SeriesSpec("CT", 7, size=192, description=PRIOR_SERIES),
          SeriesSpec("CT", 3, size=192, description="Scout anterior")]),
    ]:
        uid, paths = write_study(tmp_path / name, PAULA, series, study_date=date,
                                 accession=f"ACC-CMP-{name}", description=f"CT tórax {name}",
                                 seed=seed)
        for path in paths:
            with path.open("rb") as fp:
                assert ingest(fp, source="test:ohif-compare").accepted
        uids[name] = uid
    Patient.objects.filter(patient_id=PAULA.patient_id).update(clinic=story_clinic())
    return uids


@pytest.fixture
def granted_dora(dora: User, studies) -> User:
    AccessGrant.objects.create(doctor=dora, clinic=story_clinic(),
                               patient=Patient.objects.get(patient_id=PAULA.patient_id))
    return dora


@pytest.fixture
def doras_viewer(browser: Browser, live_server, granted_dora, ohif_dist):  # noqa: F811
    """dora signed in through the portal's login form, at OHIF's study list."""
    yield from signed_in_viewer(browser, live_server, username="dora")


def test_the_compare_url_lists_the_current_study_first_and_names_the_protocol():
    query = parse_qs(study_query("1.2.3", "4.5.6"))
    assert query == {"StudyInstanceUIDs": ["1.2.3,4.5.6"], "hangingProtocolId": [COMPARE_PROTOCOL]}
    assert parse_qs(study_query("1.2.3")) == {"StudyInstanceUIDs": ["1.2.3"]}


def test_a_doctor_sees_the_current_study_and_its_prior_side_by_side(
        doras_viewer: Page, live_server, studies, tmp_path):
    page = doras_viewer
    log = DicomwebLog(page)
    page.goto(f"{live_server.url}/viewer/viewer?"
              f"{study_query(studies['current'], studies['prior'])}")

    deadline = time.monotonic() + DRAWN_TIMEOUT_S
    while True:
        panes = drawn_panes(page)
        current, prior = showing(panes, CURRENT_SERIES), showing(panes, PRIOR_SERIES)
        if current and prior:
            break
        assert time.monotonic() < deadline, (
            f"not both drawn after {DRAWN_TIMEOUT_S}s: {[p.text for p in panes]}; "
            f"DICOMweb: {log.responses[-10:]}")
        page.wait_for_timeout(200)
    page.screenshot(path=str(tmp_path / "ohif-compare.png"))

    assert current.has_image() and prior.has_image()
    assert current.y == prior.y and current.x < prior.x, "current left of prior, one row"
    assert "02-Mar-2026" in current.text and "01-Mar-2025" in prior.text
    assert PRIOR_SERIES not in current.text and CURRENT_SERIES not in prior.text
    assert current.picture != prior.picture, "two different pictures"
    requested = {url.split("/studies/")[1].split("/")[0] for _, url in log.responses
                 if "/frames/" in url}
    assert requested == {studies["current"], studies["prior"]}, "frames of both studies"
    assert log.failures() == []
