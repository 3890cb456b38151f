"""CORS on DICOMweb paths only, for the origins configured; preflight answered without
credentials; nothing at all when DICOMWEB_CORS_ORIGINS is empty."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db

VIEWER = "https://viewer.clinic.example"


@pytest.fixture
def cors(settings):
    settings.MIDDLEWARE = ["dicomweb.cors.CorsMiddleware", *settings.MIDDLEWARE]
    settings.DICOMWEB_CORS_ORIGINS = [VIEWER]
    return settings


def test_preflight_is_answered_for_an_allowed_origin(client, cors):
    response = client.options("/dicomweb/studies/1.2.3/metadata", HTTP_ORIGIN=VIEWER,
                              HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET",
                              HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, accept")
    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == VIEWER
    assert "GET" in response["Access-Control-Allow-Methods"]
    assert response["Access-Control-Allow-Headers"] == "authorization, accept"


def test_responses_carry_the_origin_even_when_refused(client, cors):
    response = client.get("/dicomweb/studies/1.2.3/metadata", HTTP_ORIGIN=VIEWER)
    assert response.status_code == 401
    assert response["Access-Control-Allow-Origin"] == VIEWER
    assert "Origin" in response["Vary"]


def test_other_origins_and_other_paths_get_nothing(client, cors):
    response = client.get("/dicomweb/studies/1.2.3/metadata", HTTP_ORIGIN="https://evil.example")
    assert "Access-Control-Allow-Origin" not in response
    response = client.get("/accounts/login/", HTTP_ORIGIN=VIEWER)
    assert "Access-Control-Allow-Origin" not in response


def test_star_allows_any_origin_without_credentials(client, cors):
    cors.DICOMWEB_CORS_ORIGINS = ["*"]
    response = client.get("/dicomweb/studies/1.2.3/metadata", HTTP_ORIGIN="https://x.example")
    assert response["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in response


def test_no_origins_configured_means_no_cors(client, cors):
    cors.DICOMWEB_CORS_ORIGINS = []
    response = client.get("/dicomweb/studies/1.2.3/metadata", HTTP_ORIGIN=VIEWER)
    assert "Access-Control-Allow-Origin" not in response
