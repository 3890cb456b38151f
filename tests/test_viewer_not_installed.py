"""Without OHIF the portal still works: the study list says the viewer is missing instead
of linking to it, and /viewer/ answers a translated 503 page that names no server path."""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_study_list_page import archive  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parent.parent

STUDIES = "/imaging/"


@pytest.fixture
def no_ohif(settings, tmp_path: Path) -> Path:
    empty = tmp_path / "ohif-dist"
    empty.mkdir()
    settings.OHIF_DIST = empty
    return empty


def test_the_study_list_tells_the_admin_to_run_bin_setup_instead_of_linking(
        client, alice, archive, no_ohif):  # noqa: F811
    client.force_login(alice)
    html = client.get(STUDIES).content.decode()
    assert "CT tórax" in html
    assert "/viewer/viewer?StudyInstanceUIDs=" not in html
    assert ">Abrir<" not in html
    assert "O visualizador de imagens (OHIF) não está instalado neste servidor" in html
    assert "bin/setup" in html
    assert str(no_ohif) not in html


def test_the_study_list_tells_a_doctor_to_ask_the_administrator(client, dora, no_ohif):
    client.force_login(dora)
    html = client.get(STUDIES).content.decode()
    assert "peça ao administrador para executar bin/setup" in html
    assert str(no_ohif) not in html


def test_the_study_list_links_to_the_viewer_when_it_is_installed(
        client, alice, archive, settings, tmp_path):  # noqa: F811
    (tmp_path / "index.html").write_text("<html></html>")
    settings.OHIF_DIST = tmp_path
    client.force_login(alice)
    html = client.get(STUDIES).content.decode()
    assert "/viewer/viewer?StudyInstanceUIDs=" in html and ">Abrir<" in html
    assert "não está instalado" not in html


@pytest.mark.parametrize("url", ["/viewer/", "/viewer/viewer?StudyInstanceUIDs=1.2.3",
                                 "/viewer/app-config.js"])
def test_the_viewer_answers_503_in_the_users_language_with_no_path(client, alice, no_ohif,
                                                                   url):
    client.force_login(alice)
    response = client.get(url)
    html = response.content.decode()
    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/html")
    assert "Visualizador não instalado" in html and "bin/setup" in html
    assert str(no_ohif) not in html and str(Path.cwd()) not in html
    assert str(REPO) not in html and ".cache" not in html


def test_the_viewer_page_is_spanish_for_a_spanish_doctor(client, dora, no_ohif, settings):
    client.force_login(dora)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "es"
    html = client.get("/viewer/").content.decode()
    assert "pida al administrador que ejecute bin/setup" in html
    assert str(no_ohif) not in html


def test_a_missing_viewer_still_asks_a_visitor_to_sign_in(client, no_ohif, db):
    response = client.get("/viewer/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
