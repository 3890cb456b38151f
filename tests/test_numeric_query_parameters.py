"""Numeric query parameters (QIDO-RS ``offset`` and ``limit``, the study list's ``page``)
are whole numbers the database can hold: a negative, non-numeric or too large value is a
400 with a message, never a 500. Run on PostgreSQL too (DATABASE_URL), where an offset
beyond bigint is an error the database raises."""

from __future__ import annotations

import pytest

from imaging.paging import MAX_QUERY_NUMBER
from tests.wado_support import store

pytestmark = pytest.mark.django_db

STUDIES = "/dicomweb/studies"
BAD_VALUES = ["-1", "abc", "1.5", "+3", "1_000", "٣", str(2**63), "9" * 30,
              str(MAX_QUERY_NUMBER + 1)]


@pytest.fixture
def archive(ct_study, alice, client):
    store(ct_study[1])
    client.force_login(alice)


@pytest.mark.parametrize("name", ["offset", "limit"])
@pytest.mark.parametrize("value", BAD_VALUES)
def test_a_qido_count_that_is_not_a_small_whole_number_is_400_with_a_message(
    client, archive, name, value,
):
    response = client.get(STUDIES, {name: value})
    assert response.status_code == 400, (name, value)
    assert name in response.json()["error"]


def test_an_empty_count_means_the_default(client, archive):
    response = client.get(STUDIES, {"offset": "", "limit": ""})
    assert response.status_code == 200
    assert len(response.json()) == 1


def test_the_largest_offset_reaches_the_database_and_finds_nothing(client, archive):
    response = client.get(STUDIES, {"offset": str(MAX_QUERY_NUMBER), "limit": "10"})
    assert response.status_code == 200
    assert response.json() == []


@pytest.mark.postgres
def test_the_largest_offset_and_limit_fit_postgresqls_integers(client, archive):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL's bigint OFFSET")
    for level in ("studies", "series", "instances"):
        response = client.get(f"/dicomweb/{level}",
                              {"offset": str(MAX_QUERY_NUMBER), "limit": "10000"})
        assert response.status_code == 200, level
        assert response.json() == []
        assert client.get(f"/dicomweb/{level}", {"offset": str(2**63)}).status_code == 400


@pytest.mark.parametrize("level", ["series", "instances"])
def test_series_and_instance_searches_check_their_counts_too(client, archive, level):
    response = client.get(f"/dicomweb/{level}", {"offset": str(2**64)})
    assert response.status_code == 400
    assert "offset" in response.json()["error"]


@pytest.mark.parametrize("value", ["-1", "0", "abc", str(2**63), "9" * 30, "٣"])
def test_a_study_list_page_that_is_not_a_page_number_is_400_with_a_message(
    client, archive, value,
):
    response = client.get("/imaging/", {"page": value})
    assert response.status_code == 400
    assert "page" in response.content.decode()


def test_a_study_list_page_beyond_the_last_shows_the_last(client, archive):
    response = client.get("/imaging/", {"page": "7"})
    assert response.status_code == 200
    assert "CT tórax" in response.content.decode()


@pytest.mark.parametrize("value", [str(2**63), "9" * 30, "-" + "9" * 30, "٣", "1.5"])
def test_a_numeric_matching_key_beyond_the_database_integers_is_400(client, archive, value):
    response = client.get("/dicomweb/series", {"SeriesNumber": value})
    assert response.status_code == 400, value
    assert "SeriesNumber" in response.json()["error"]


def test_a_negative_series_number_is_a_valid_match(client, archive):
    assert client.get("/dicomweb/series", {"SeriesNumber": "-1"}).json() == []
    assert len(client.get("/dicomweb/series", {"SeriesNumber": "1"}).json()) == 1


@pytest.mark.parametrize("query", ["window=nan,400", "window=40,inf", "window=1e999,10",
                                   "viewport=٣٠٠,300", "viewport=%2B300,300",
                                   f"viewport={2**63},10", "quality=%2B90", "quality=٩٠",
                                   f"quality={'9' * 30}"])
def test_rendering_numbers_that_are_not_plain_finite_numbers_are_400(client, archive,
                                                                     ct_study, query):
    from pydicom import dcmread

    ds = dcmread(ct_study[1][0], stop_before_pixels=True)
    url = (f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
           f"/instances/{ds.SOPInstanceUID}/rendered?{query}")
    response = client.get(url, HTTP_ACCEPT="image/jpeg")
    assert response.status_code == 400, query
    assert response.json()["error"]
